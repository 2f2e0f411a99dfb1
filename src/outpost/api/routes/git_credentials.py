"""`/v1/git-credentials`: the tenant's credentials for private git repositories, by host."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from outpost.api.auth import CallerDep, ContainerDep
from outpost.schemas.git_credentials import GitCredentialList, GitCredentialRead, GitCredentialSet, GitHost
from outpost.schemas.secret_versions import MAX_VERSION, SecretVersionList, version_list

router = APIRouter(prefix="/v1/git-credentials", tags=["git-credentials"])
Version = Annotated[int, Path(ge=1, le=MAX_VERSION)]


@router.get("", response_model=GitCredentialList)
async def list_git_credentials(caller: CallerDep, container: ContainerDep) -> GitCredentialList:
    return GitCredentialList(items=await container.git_credentials.list_credentials(caller))


@router.put("/{host}", response_model=GitCredentialRead)
async def set_git_credential(
    host: GitHost, body: GitCredentialSet, caller: CallerDep, container: ContainerDep
) -> GitCredentialRead:
    return await container.git_credentials.set_credential(caller, host, body)


@router.delete("/{host}", status_code=204)
async def delete_git_credential(host: GitHost, caller: CallerDep, container: ContainerDep) -> Response:
    await container.git_credentials.delete_credential(caller, host)
    return Response(status_code=204)


@router.get("/{host}/versions", response_model=SecretVersionList)
async def list_git_credential_versions(
    host: GitHost, caller: CallerDep, container: ContainerDep
) -> SecretVersionList:
    return version_list(await container.git_credentials.list_versions(caller, host))


@router.delete("/{host}/versions/{version}", status_code=204)
async def retire_git_credential_version(
    host: GitHost, version: Version, caller: CallerDep, container: ContainerDep
) -> Response:
    await container.git_credentials.retire_version(caller, host, version)
    return Response(status_code=204)
