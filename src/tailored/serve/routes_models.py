"""``GET /v1/models`` and ``GET /v1/models/{id}``: the base and every servable fine-tune."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tailored.serve.protocol import ModelCard, ModelList

router = APIRouter()


def card(entry: Any, base_id: str) -> ModelCard:
    return ModelCard(
        id=entry.id, created=entry.created, root=base_id, parent=None if entry.kind == "base" else base_id,
        kind=entry.kind, run=entry.run_dir.name if entry.run_dir is not None else None,
        owned_by=entry.project or "tailored", weights=entry.which if entry.run_dir is not None else None,
    )


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    registry = request.app.state.registry
    data = [card(e, registry.base.id) for e in registry.models(request.state.caller.scope)]
    return ModelList(data=data).model_dump(mode="json")


@router.get("/models/{model:path}")
def get_model(model: str, request: Request) -> dict[str, Any]:
    registry = request.app.state.registry
    return card(registry.resolve(model, request.state.caller.scope), registry.base.id).model_dump(mode="json")
