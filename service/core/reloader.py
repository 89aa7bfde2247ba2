"""Hot reload: new versions dropped into the model repository are served without a restart.

A reload compares what the repository (under the version policy) wants served with what is
loaded. New versions are loaded in a worker thread (ONNX Runtime session creation takes tens
of milliseconds) and then registered on the event loop, so requests never see a half-built
model; in-flight requests keep the LoadedModel they hold. A version that is no longer wanted
is unloaded only once no session is pinned to it; a broken file is refused with a log line
and the previous versions keep serving. Each reload also re-reads the loaded versions'
manifest.json quality gates, so promoting or withdrawing a version there changes the default
version for new sessions without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.core.errors import ServiceError

if TYPE_CHECKING:
    from service.core.services import Services

log = logging.getLogger("seqserve.reload")


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # unwanted but still pinned by sessions
    failed: dict[str, str] = field(default_factory=dict)
    regated: list[str] = field(default_factory=list)  # loaded versions whose promotion changed

    def as_dict(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "unloaded": self.unloaded,
            "kept": self.kept,
            "failed": self.failed,
            "regated": self.regated,
        }


async def reload(svc: Services) -> ReloadReport:
    async with svc.reload_lock:
        report = ReloadReport()
        registry = svc.registry
        loop = asyncio.get_running_loop()
        report.regated = registry.refresh_gates()  # manifest.json gates edited since last time
        wanted = await loop.run_in_executor(svc.executor, registry.wanted)
        for entry in wanted:
            if registry.has(entry.name, entry.version):
                continue
            model, error = await loop.run_in_executor(svc.executor, registry.try_load, entry)
            if model is None:
                if error is not None:
                    report.failed[f"{entry.name}/{entry.version}"] = error
                continue
            svc.pool.load(model)
            report.loaded.append(model.key)
        if report.loaded and svc.settings.version_policy == "latest":
            # What was just loaded may turn out unpromoted (its gate is in the file): ask again,
            # so that the promoted default it would have displaced stays loaded.
            wanted = await loop.run_in_executor(svc.executor, registry.wanted)
        wanted_keys = {(e.name, e.version) for e in wanted}

        stale = [m for m in registry if (m.name, m.version) not in wanted_keys]
        if stale:
            try:
                in_use = await svc.store.usage()
            except ServiceError as exc:  # store down: unload nothing rather than guess
                log.warning("reload: cannot count sessions (%s); keeping %d stale versions", exc.message, len(stale))
                report.kept.extend(m.key for m in stale)
                return report
            for model in stale:
                if in_use.get((model.name, model.version), 0):
                    report.kept.append(model.key)
                    continue
                svc.pool.unload(model)
                report.unloaded.append(model.key)
                log.info("unloaded %s", model.key)
        if report.loaded or report.unloaded or report.failed or report.regated:
            log.info("reload: %s", report.as_dict())
        return report


async def poll_forever(svc: Services, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await reload(svc)
        except Exception:  # a poll must never die; the next one tries again
            log.exception("reload poll failed")
