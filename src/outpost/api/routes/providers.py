"""`/v1/providers`: the model providers a tenant's runs call, and the tenant's own keys for them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from outpost.api.auth import CallerDep, ContainerDep
from outpost.schemas.providers import ProviderRead, ProviderUpdate
from outpost.schemas.secret_versions import MAX_VERSION, SecretVersionList, version_list

router = APIRouter(prefix="/v1/providers", tags=["providers"])
Version = Annotated[int, Path(ge=1, le=MAX_VERSION)]


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


@router.get("/{name}/key-versions", response_model=SecretVersionList)
async def list_key_versions(name: str, caller: CallerDep, container: ContainerDep) -> SecretVersionList:
    return version_list(await container.providers.list_key_versions(caller, name))


@router.delete("/{name}/key-versions/{version}", status_code=204)
async def retire_key_version(
    name: str, version: Version, caller: CallerDep, container: ContainerDep
) -> Response:
    await container.providers.retire_key_version(caller, name, version)
    return Response(status_code=204)
