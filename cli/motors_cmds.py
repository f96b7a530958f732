"""The motors' commands, mounted lazily on the main group: `evaluate` and `adapt`
(`gd.cli.evaluate_cmds`), `experiences ...` (`gd.cli.experiences_cmds`) and
`decisions ...` (`gd.cli.decisions_cmds`); what they share is `gd.cli.motors_common`.

Lazily: these modules import the motors and numpy, which no other command needs, so the
main group imports them only when one of these is run or listed (`GuardedGroup`,
ADR 0063). This table is all `gd.cli.main` reads.
"""

from __future__ import annotations

from typing import Final

# name -> "module:attribute" of the click command.
LAZY_COMMANDS: Final[dict[str, str]] = {
    "evaluate": "gd.cli.evaluate_cmds:evaluate_cmd",
    "adapt": "gd.cli.evaluate_cmds:adapt_cmd",
    "experiences": "gd.cli.experiences_cmds:experiences_group",
    "decisions": "gd.cli.decisions_cmds:decisions_group",
}
