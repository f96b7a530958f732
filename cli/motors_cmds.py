"""The motors' commands, mounted on the main group: `evaluate` and `adapt`
(`gd.cli.evaluate_cmds`), `experiences ...` (`gd.cli.experiences_cmds`) and
`decisions ...` (`gd.cli.decisions_cmds`); what they share is `gd.cli.motors_common`.
"""

from __future__ import annotations

from typing import Final

import click

from gd.cli.decisions_cmds import decisions_group
from gd.cli.evaluate_cmds import adapt_cmd, evaluate_cmd
from gd.cli.experiences_cmds import experiences_group

COMMANDS: Final[list[click.Command]] = [evaluate_cmd, adapt_cmd, experiences_group,
                                        decisions_group]
