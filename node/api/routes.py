"""The whole route table: every served route, in the order the OpenAPI document lists
them. Adding a route is adding it to one of the `views_*` tables."""

from __future__ import annotations

from typing import Final

from gd.node.api import views_genes, views_jobs, views_node
from gd.node.api.graphql_route import ROUTES as GRAPHQL_ROUTES
from gd.node.api.routing import Route
from gd.node.api.views_more import ROUTES as MORE_ROUTES

ALL_ROUTES: Final[tuple[Route, ...]] = (
    *views_node.ROUTES, *views_genes.ROUTES, *views_jobs.ROUTES, *MORE_ROUTES,
    *GRAPHQL_ROUTES)
