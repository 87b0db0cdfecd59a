"""Where Dagster keeps the assets' return values between processes: Dagster's own pickling
filesystem IO manager (under DAGSTER_HOME/storage), without the `path` row it adds to every
materialization. The values are small dicts (where the artifacts are, their counts); the
artifacts themselves live under FINEGPT_HOME and each asset names them in its own metadata, so
a second `path`, to a pickle, only misleads a reader of the asset page."""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg

from assets.dagster_internals import pickled_io_manager


class _WithoutPathRow:
    """An output context whose metadata drops the IO manager's own `path` entry."""

    def __init__(self, context: dg.OutputContext):
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def add_output_metadata(self, metadata: dict) -> None:
        kept = {key: value for key, value in metadata.items() if key != "path"}
        if kept:
            self._context.add_output_metadata(kept)


class _QuietPickles(pickled_io_manager()):
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        super().handle_output(_WithoutPathRow(context), obj)


class AssetValues(dg.ConfigurableIOManagerFactory):
    """The code location's `io_manager`: Dagster's filesystem pickles, no `path` row."""

    base_dir: Optional[str] = None  # default: the instance's storage directory

    def create_io_manager(self, context: dg.InitResourceContext) -> _QuietPickles:
        return _QuietPickles(base_dir=self.base_dir or context.instance.storage_directory())
