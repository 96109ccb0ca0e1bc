"""Model administration: list the collection's model versions, promote one to serve, retire one."""

from __future__ import annotations

from app.core.errors import ModelNotFound, ModelNotReady, ModelServing
from app.core.schemas import ModelsOut, ModelVersionOut, PromoteOut, RetireOut
from app.encode.model_set import ModelSet
from app.service.store_access import StoreAccess


class ModelAdmin:
    def __init__(self, access: StoreAccess, models: ModelSet) -> None:
        self._access = access
        self._models = models

    async def list_models(self) -> ModelsOut:
        versions = await self._access.versions(fresh=True)
        store = self._access.store
        rows = []
        for version, mv in versions.all.items():
            if mv.state == "retired":  # its vectors are gone: every item misses them
                have, total = 0, await self._access.call("count", store.count)
            else:
                have, total = await self._access.call("coverage", store.coverage, version)
            encoder = self._models.get(version)
            rows.append(
                ModelVersionOut(
                    model_version=version,
                    state=mv.state,
                    coverage=_fraction(have, total) if mv.state != "retired" else 0.0,
                    items_missing=total - have,
                    dim=mv.dim,
                    image_size=encoder.image_size if encoder else None,
                    precision=encoder.precision if encoder else None,
                    provider=encoder.provider if encoder else None,
                )
            )
        return ModelsOut(serving=versions.serving, versions=rows)

    async def promote(self, version: str, force: bool = False) -> PromoteOut:
        """Make `version` serve /similar; 409 model_not_ready while items lack its vector, unless forced."""
        versions = await self._access.versions(fresh=True)
        version = versions.check_active(version)
        if self._models.get(version) is None:
            raise ModelNotFound(f"model version {version!r} has no model file loaded here (LOOKALIKE_MODEL_PATH)")
        store = self._access.store
        have, total = await self._access.call("coverage", store.coverage, version)
        if have < total and not force:
            raise ModelNotReady(
                f"model version {version!r} covers {have} of {total} items ({_fraction(have, total):.1%}); "
                f"backfill it first (`lookalike models backfill {version}`), or promote with force=true "
                f"and {total - have} item(s) drop out of /similar results until they have its vector"
            )
        if version != versions.serving:
            await self._access.call("promote", store.promote, version)
        await self._access.versions(fresh=True)
        return PromoteOut(
            serving=version, previous=versions.serving, coverage=_fraction(have, total), items_missing=total - have
        )

    async def retire(self, version: str) -> RetireOut:
        """Drop a non-serving version's vectors (its space is freed); 409 model_serving for the serving one."""
        versions = await self._access.versions(fresh=True)
        version = versions.check_active(version)
        if version == versions.serving:
            raise ModelServing(f"model version {version!r} serves /similar; promote another version first")
        await self._access.call("retire", self._access.store.retire, version)
        await self._access.versions(fresh=True)
        return RetireOut(model_version=version, state="retired")


def _fraction(have: int, total: int) -> float:
    return 1.0 if total == 0 else have / total
