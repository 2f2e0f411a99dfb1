"""`/v1/keys` and `/v1/tenants`: key management over the API."""

from __future__ import annotations

from fastapi import APIRouter

from outpost.api.auth import AdminDep, CallerDep, ContainerDep
from outpost.errors import PermissionDenied
from outpost.schemas.convert import key_read, tenant_policy_read
from outpost.schemas.keys import KeyCreate, KeyIssued, KeyRead, TenantCreate, TenantIssued
from outpost.schemas.tenants import TenantPolicyRead, TenantPolicyUpdate

router = APIRouter(tags=["keys"])


@router.post("/v1/keys", status_code=201, response_model=KeyIssued)
async def create_key(body: KeyCreate, caller: CallerDep, container: ContainerDep) -> KeyIssued:
    issued = await container.keys.create_key(caller, body)
    return KeyIssued(**key_read(issued.row).model_dump(), key=issued.token)


@router.get("/v1/keys", response_model=list[KeyRead])
async def list_keys(caller: CallerDep, container: ContainerDep) -> list[KeyRead]:
    return [key_read(row) for row in await container.keys.list_keys(caller)]


@router.delete("/v1/keys/{key_id}", response_model=KeyRead)
async def revoke_key(key_id: str, caller: CallerDep, container: ContainerDep) -> KeyRead:
    return key_read(await container.keys.revoke_key(caller, key_id))


@router.post("/v1/tenants", status_code=201, response_model=TenantIssued)
async def create_tenant(body: TenantCreate, caller: CallerDep, container: ContainerDep) -> TenantIssued:
    if not caller.is_admin:
        raise PermissionDenied("only an admin key can create tenants")
    tenant, issued = await container.keys.create_tenant(body.name, admin=body.admin, origin=caller.origin)
    key = KeyIssued(**key_read(issued.row).model_dump(), key=issued.token)
    return TenantIssued(id=tenant.id, name=tenant.name, created_at=tenant.created_at, key=key)


@router.get("/v1/tenants/{tenant_id}", response_model=TenantPolicyRead)
async def get_tenant(tenant_id: str, _admin: AdminDep, container: ContainerDep) -> TenantPolicyRead:
    return tenant_policy_read(await container.keys.get_tenant(tenant_id))


@router.patch("/v1/tenants/{tenant_id}", response_model=TenantPolicyRead)
async def update_tenant(
    tenant_id: str, body: TenantPolicyUpdate, admin: AdminDep, container: ContainerDep
) -> TenantPolicyRead:
    updated = await container.keys.update_tenant_policy(tenant_id, body, origin=admin.origin)
    return tenant_policy_read(updated)
