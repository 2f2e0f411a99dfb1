"""`/v1/providers`: the model providers a tenant's runs call, and the tenant's own keys for them."""

from __future__ import annotations

from fastapi import APIRouter, Response

from outpost.api.auth import CallerDep, ContainerDep
from outpost.schemas.providers import ProviderRead, ProviderUpdate

router = APIRouter(prefix="/v1/providers", tags=["providers"])


@router.get("", response_model=list[ProviderRead])
async def list_providers(caller: CallerDep, container: ContainerDep) -> list[ProviderRead]:
    return await container.providers.list_providers(caller)


@router.get("/{name}", response_model=ProviderRead)
async def get_provider(name: str, caller: CallerDep, container: ContainerDep) -> ProviderRead:
    return await container.providers.get_provider(caller, name)


@router.patch("/{name}", response_model=ProviderRead)
async def update_provider(
    name: str, body: ProviderUpdate, caller: CallerDep, container: ContainerDep
) -> ProviderRead:
    return await container.providers.update_provider(caller, name, body)


@router.delete("/{name}", status_code=204)
async def reset_provider(name: str, caller: CallerDep, container: ContainerDep) -> Response:
    await container.providers.reset_provider(caller, name)
    return Response(status_code=204)
