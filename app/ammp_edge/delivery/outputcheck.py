"""The JSONata outputs' problems for the config door (core.configdoor `check_outputs`), which every
door passes so each reports the same problems.

JSONata is imported only for a config that has outputs: it costs a process about 0.7 MB of RSS, and
node and `up` handle configs without outputs as often as not.
"""

from __future__ import annotations

from ..core.config import Config
from ..core.problems import Problem


def output_problems(config: Config) -> list[Problem]:
    if not config.outputs:
        return []
    from .outputs import compile_outputs  # lazy: JSONata only for a config with outputs (module doc)

    return compile_outputs(config.outputs)[1]
