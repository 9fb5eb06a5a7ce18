"""The route table: every operation's method, path, handler, operationId, who may call it, and
what it takes and answers. The router dispatches from it; the OpenAPI document is derived from it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from src.api.handlers import Handlers
from src.api.http import Request, Response
from src.api.schemas import IMAGE_NAME, PROJECT_NAME, UUID
from src.vocabulary import ACTION_OPTIONS, POWER_ACTIONS, VM_STATUSES

Handler = Callable[..., Response]
Query = tuple[tuple[str, dict[str, Any]], ...]
PAGE_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}
ID_PAGE = (("limit", PAGE_LIMIT), ("marker", UUID))  # a list paged by its items' ids
KEYPAIR_PROJECT = ("project", {"type": "string", "description":
                               "Admins: another project's keypair (default: your own)"})
# On every route of one VM: which project's VM {vm} names (names are unique per project).
VM_PROJECT = ("project", {"type": "string", "description":
                          "The VM's project, when {vm} is a name that several projects use "
                          "(409 ambiguous_name without it)"})


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler  # a Handlers method, bound by the router
    operation_id: str
    access: str = "member"  # public (no token), member (any valid token) or admin
    ok: int = 200
    returns: str | None = None  # schema of the success body; None: no body (or text)
    errors: tuple[int, ...] = ()  # statuses beyond those every operation of its kind may give
    body: str | None = None  # schema of the request body
    body_required: bool = True
    query: Query = ()
    description: str = ""
    text: bool = False  # the success body is text/plain
    action: str | None = None  # the power action a shared handler performs
    file_body: bool = False  # the body is a file (application/octet-stream), streamed
    headers: tuple[str, ...] = ()  # headers the success answer may carry (openapi.HEADERS)
    # False when the answer holds a secret: an Idempotency-Key would store it, so it is refused.
    replayable: bool = True
    web: bool = False  # a dashboard page or file, not JSON: the OpenAPI document leaves it out

    def call(self, handlers: Handlers, request: Request, params: dict[str, str]) -> Response:
        extra = {"action": self.action} if self.action else {}
        return self.handler(handlers, request, **params, **extra)


H = Handlers
VOLUME_PROJECT = ("project", {"type": "string", "description":
                              "The volume's project, when {volume} is a name that several "
                              "projects use (409 ambiguous_name without it)"})
NETWORK_ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/networks", H.list_networks, "listNetworks", returns="NetworkList",
          description="The libvirt networks of every host (admins: each host's, with its "
                      "host; members: the names a VM may ask for, active on some host)."),
    Route("POST", "/v1/networks", H.create_network, "createNetwork", "admin", 201, "Network",
          (400, 409), body="NetworkCreate",
          description="Define and start a network on a host through libvirt (autostarted)."),
    Route("DELETE", "/v1/networks/{host}/{network}", H.delete_network, "deleteNetwork",
          "admin", 204, errors=(404, 409),
          description="Only a network defined through this API (409 network_not_managed) "
                      "that no VM uses (409 network_in_use)."),
)
RESERVATION_ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/reservations", H.list_reservations, "listReservations",
          returns="ReservationList",
          description="Your project's reservations (admins: every project's), by start."),
    Route("POST", "/v1/reservations", H.create_reservation, "createReservation", ok=201,
          returns="Reservation", errors=(400, 403, 409), body="ReservationCreate",
          description="Book count VMs of a GPU flavor for [start, end): it claims GPUs (host "
                      "and PCI address) for the window, or answers 409 reservation_conflict "
                      "with details.next_start."),
    Route("GET", "/v1/reservations/{reservation}", H.show_reservation, "showReservation",
          returns="Reservation", errors=(404,)),
    Route("DELETE", "/v1/reservations/{reservation}", H.cancel_reservation,
          "cancelReservation", returns="Reservation", errors=(404, 409),
          description="Cancel: a pending one at once; an active one gives its GPUs back and "
                      "its VMs are stopped as at its end."),
)
VOLUME_ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/volumes", H.list_volumes, "listVolumes", returns="VolumeList",
          errors=(400,), query=(("limit", PAGE_LIMIT), ("marker", UUID)),
          description="Your project's volumes (admins: every project's), with attachments."),
    Route("POST", "/v1/volumes", H.create_volume, "createVolume", ok=202, returns="Volume",
          errors=(403, 409), body="VolumeCreate",
          description="A persistent block volume, empty or a full copy of an image; it is "
                      "`creating` until its task makes it `available`."),
    Route("GET", "/v1/volumes/{volume}", H.show_volume, "showVolume", returns="Volume",
          errors=(404, 409), query=(VOLUME_PROJECT,)),
    Route("DELETE", "/v1/volumes/{volume}", H.delete_volume, "deleteVolume", ok=202,
          returns="Task", errors=(404, 409), query=(VOLUME_PROJECT,),
          description="Removes it with its snapshots; an attached volume is 409 volume_in_use."),
    Route("POST", "/v1/volumes/{volume}/resize", H.resize_volume, "resizeVolume", ok=202,
          returns="Task", errors=(403, 404, 409), body="VolumeResize", query=(VOLUME_PROJECT,),
          description="Grow an available volume (never shrinks: 400)."),
    Route("GET", "/v1/volumes/{volume}/snapshots", H.list_volume_snapshots,
          "listVolumeSnapshots", returns="SnapshotList", errors=(404, 409),
          query=(VOLUME_PROJECT,)),
    Route("POST", "/v1/volumes/{volume}/snapshots", H.create_volume_snapshot,
          "createVolumeSnapshot", ok=202, returns="Snapshot", errors=(404, 409),
          body="SnapshotCreate", query=(VOLUME_PROJECT,),
          description="409 volume_in_use while a running VM has it attached read-write, "
                      "vm_busy while such a VM has a task under way."),
    Route("DELETE", "/v1/volumes/{volume}/snapshots/{snapshot}", H.delete_volume_snapshot,
          "deleteVolumeSnapshot", ok=202, returns="Task", errors=(404, 409),
          query=(VOLUME_PROJECT,)),
    Route("POST", "/v1/volumes/{volume}/revert", H.revert_volume, "revertVolume", ok=202,
          returns="Task", errors=(404, 409), body="Revert", query=(VOLUME_PROJECT,),
          description="Bring back a snapshot's content; only an available volume attached "
                      "nowhere (409 volume_in_use)."),
    Route("POST", "/v1/vms/{vm}/volumes", H.attach_volume, "attachVolume", ok=202,
          returns="Task", errors=(404, 409), body="AttachmentCreate", query=(VM_PROJECT,),
          description="Hot-plugged into a running VM; a stopped VM has it at its next start."),
    Route("GET", "/v1/vms/{vm}/snapshots", H.list_vm_snapshots, "listVmSnapshots",
          returns="SnapshotList", errors=(404, 409), query=(VM_PROJECT,)),
    Route("POST", "/v1/vms/{vm}/snapshots", H.create_vm_snapshot, "createVmSnapshot", ok=202,
          returns="Snapshot", errors=(404, 409), body="SnapshotCreate", query=(VM_PROJECT,),
          description="A snapshot of the root disk of a stopped VM (409 vm_not_stopped)."),
    Route("DELETE", "/v1/vms/{vm}/snapshots/{snapshot}", H.delete_vm_snapshot,
          "deleteVmSnapshot", ok=202, returns="Task", errors=(404, 409), query=(VM_PROJECT,)),
    Route("POST", "/v1/vms/{vm}/revert", H.revert_vm, "revertVm", ok=202, returns="Task",
          errors=(400, 404, 409), body="Revert", query=(VM_PROJECT,),
          description="Bring a stopped VM's root disk back to a snapshot."),
    Route("POST", "/v1/vms/{vm}/image", H.create_vm_image, "createVmImage", ok=202,
          returns="Image", errors=(403, 404, 409), body="ImageFromVm", query=(VM_PROJECT,),
          description="A new private image of the project: the stopped VM's root disk, "
                      "flattened; `importing` until its task lands it."),
    Route("DELETE", "/v1/vms/{vm}/volumes/{volume}", H.detach_volume, "detachVolume", ok=202,
          returns="Task", errors=(404, 409), query=(VM_PROJECT,),
          description="Hot-unplugged from a running VM (the task fails when the guest does "
                      "not let go in time; the volume then stays attached)."),
)
MOTION_ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/vms/{vm}/migrate", H.migrate_vm, "migrateVm", "admin", 202, "Task",
          (400, 404, 409), body="VmMigrate", body_required=False, query=(VM_PROJECT,),
          description="Move the VM to another host (409 vm_not_migratable with the reason): "
                      "live by default, its disks and volumes copied when the hosts do not "
                      "share storage; the task shows its progress."),
    Route("POST", "/v1/hosts/{host}/drain", H.drain_host, "drainHost", "admin", 202, "Host",
          (404, 503), body="NoOptions", body_required=False,
          description="The host takes no new VMs and each of its VMs migrates away (one task "
                      "each, IAAS_DRAIN_PARALLEL at a time); `drain` shows how far it got and "
                      "the VMs that stay, with why."),
    Route("POST", "/v1/hosts/{host}/evacuate", H.evacuate_host, "evacuateHost", "admin", 202,
          "Evacuation", (400, 404, 409), body="HostEvacuate", body_required=False,
          description="For a host that is down (409 host_not_down otherwise): each of its VMs "
                      "is rebuilt on another host, one task `evacuate` each; VMs whose disks "
                      "lived only on the dead host only with rebuild_lost_disks. The host is "
                      "disabled; when it comes back, the reconciler removes the old copies."),
)

GROUP_PROJECT = ("project", {"type": "string", "description":
                           "Admins: another project's security groups (default: your own)"})
SECURITY_ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/security-groups", H.list_security_groups, "listSecurityGroups",
          returns="SecurityGroupList", errors=(404,), query=(GROUP_PROJECT,),
          description="Your project's security groups (admins without project: every "
                      "project's); a project without any gets `default` now."),
    Route("POST", "/v1/security-groups", H.create_security_group, "createSecurityGroup",
          ok=201, returns="SecurityGroup", errors=(400, 403, 404, 409),
          body="SecurityGroupCreate", query=(GROUP_PROJECT,),
          description="A named set of ingress rules; attach it to VMs."),
    Route("GET", "/v1/security-groups/{group}", H.show_security_group, "showSecurityGroup",
          returns="SecurityGroup", errors=(404,), query=(GROUP_PROJECT,)),
    Route("DELETE", "/v1/security-groups/{group}", H.delete_security_group,
          "deleteSecurityGroup", ok=204, errors=(404, 409), query=(GROUP_PROJECT,),
          description="409 security_group_in_use while a VM has it or another group's rules "
                      "name it."),
    Route("POST", "/v1/security-groups/{group}/rules", H.add_security_group_rule,
          "addSecurityGroupRule", returns="SecurityGroup", errors=(400, 404, 409),
          body="SecurityGroupRuleCreate", query=(GROUP_PROJECT,),
          description="Add one rule; `task` refreshes its VMs' filters (running ones too)."),
    Route("PUT", "/v1/security-groups/{group}/rules", H.replace_security_group_rules,
          "replaceSecurityGroupRules", returns="SecurityGroup", errors=(400, 404, 409),
          body="SecurityGroupRules", query=(GROUP_PROJECT,),
          description="Put these rules in place of all of the group's."),
    Route("DELETE", "/v1/security-groups/{group}/rules/{rule}", H.delete_security_group_rule,
          "deleteSecurityGroupRule", returns="SecurityGroup", errors=(404,),
          query=(GROUP_PROJECT,)),
    Route("POST", "/v1/vms/{vm}/security-groups", H.attach_security_group,
          "attachSecurityGroup", ok=202, returns="Task", errors=(400, 404, 409),
          body="SecurityGroupAttach", query=(VM_PROJECT,),
          description="Attach a group of the VM's project; its filter changes on the running "
                      "VM (the task)."),
    Route("DELETE", "/v1/vms/{vm}/security-groups/{group}", H.detach_security_group,
          "detachSecurityGroup", ok=202, returns="Task", errors=(404, 409),
          query=(VM_PROJECT,)),
)
QUEUE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/queue", H.list_queue, "listQueue", returns="Queue",
          description="VMs waiting for capacity (wait_for_capacity), in fair order: yours "
                      "(admins: every project's), with their positions among all."),
)
ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", H.health, "health", "public", returns="Health", errors=(503,),
          description="Whether the database and libvirt answer."),
    Route("GET", "/metrics", H.metrics, "metrics", "admin", text=True,
          description="Prometheus text exposition (public when IAAS_METRICS_PUBLIC=on)."),
    Route("GET", "/v1/openapi.json", H.openapi, "openapi", "public", returns="OpenApiDocument"),
    Route("GET", "/", H.dashboard, "dashboard", "public", web=True,
          description="The dashboard: one page whose scripts call this API with a token."),
    Route("GET", "/static/{asset}", H.static_asset, "dashboardAsset", "public", web=True,
          description="The dashboard's scripts, style sheet and icon (an allow-list)."),
    Route("GET", "/v1/images", H.list_images, "listImages", returns="ImageList", errors=(400,),
          query=ID_PAGE, description="Public images and your project's, oldest first."),
    Route("POST", "/v1/images", H.create_image, "createImage", ok=201, returns="Image",
          errors=(403, 409), body="ImageCreate",
          description="Register a file (admins), import from a URL (400 url_not_allowed), or "
                      "make a pending image to upload to."),
    Route("GET", "/v1/images/{image}", H.show_image, "showImage", returns="Image", errors=(404,)),
    Route("PUT", "/v1/images/{image}/file", H.upload_image, "uploadImageFile", returns="Image",
          errors=(400, 403, 404, 408, 409, 413, 415, 422, 429), file_body=True,
          description="Stream a pending image's file (Content-Length or chunked)."),
    Route("DELETE", "/v1/images/{image}", H.delete_image, "deleteImage", ok=204,
          errors=(403, 404, 409),
          description="An uploaded or imported image's file goes too (an import stops)."),
    Route("GET", "/v1/keypairs", H.list_keypairs, "listKeypairs", returns="KeypairList",
          errors=(400,), query=(KEYPAIR_PROJECT, ("limit", PAGE_LIMIT), ("marker", {
              "type": "string", "pattern": f"{PROJECT_NAME[:-1]}/{IMAGE_NAME[1:]}",
              "maxLength": 128,
              "description": "`project/name`: the next_marker of the page before"})),
          description="Your project's (admins: every project's), by project and name."),
    Route("POST", "/v1/keypairs", H.create_keypair, "createKeypair", ok=201, returns="Keypair",
          errors=(409,), body="KeypairCreate"),
    Route("GET", "/v1/keypairs/{keypair}", H.show_keypair, "showKeypair", returns="Keypair",
          errors=(404,), query=(KEYPAIR_PROJECT,)),
    Route("DELETE", "/v1/keypairs/{keypair}", H.delete_keypair, "deleteKeypair", ok=204,
          errors=(404,), query=(KEYPAIR_PROJECT,)),
    Route("GET", "/v1/flavors", H.list_flavors, "listFlavors", returns="FlavorList"),
    Route("POST", "/v1/flavors", H.create_flavor, "createFlavor", "admin", 201, "Flavor", (409,),
          body="FlavorCreate"),
    Route("GET", "/v1/flavors/{flavor}", H.show_flavor, "showFlavor", returns="Flavor",
          errors=(404,)),
    Route("DELETE", "/v1/flavors/{flavor}", H.delete_flavor, "deleteFlavor", "admin", 204,
          errors=(404,)),
    Route("GET", "/v1/flavors/{flavor}/availability", H.show_availability,
          "showFlavorAvailability", returns="Availability", errors=(400, 404),
          query=(("at", {"type": "string", "maxLength": 40,
                         "description": "RFC 3339: answer for this moment (default now); "
                                        "GPUs reservations claim then are counted out"}),),
          description="How many VMs of this flavor could be created now, or at ?at=."),
    Route("GET", "/v1/gpus", H.list_gpus, "listGpus", "admin", returns="GpuList",
          query=(("host", {"type": "string"}),)),
    Route("POST", "/v1/gpus/refresh", H.refresh_gpus, "refreshGpus", "admin", returns="GpuList",
          description="Re-read the host's PCI devices; allocations are kept."),
    Route("GET", "/v1/vms", H.list_vms, "listVms", returns="VmList", errors=(400,), query=(
        ("status", {"type": "string", "enum": list(VM_STATUSES)}),
        ("name", {"type": "string"}),
        *ID_PAGE)),
    Route("POST", "/v1/vms", H.create_vm, "createVm", ok=202, returns="Vm",
          errors=(403, 409),
          body="VmCreate"),
    Route("GET", "/v1/vms/{vm}", H.show_vm, "showVm", returns="Vm", errors=(404, 409),
          query=(VM_PROJECT,)),
    Route("DELETE", "/v1/vms/{vm}", H.delete_vm, "deleteVm", ok=202, returns="Task",
          errors=(404, 409), query=(VM_PROJECT,)),
    Route("GET", "/v1/vms/{vm}/events", H.list_vm_events, "listVmEvents", returns="EventList",
          errors=(400, 404, 409), query=(("limit", PAGE_LIMIT), VM_PROJECT)),
    Route("GET", "/v1/vms/{vm}/console", H.show_console, "showVmConsole", text=True,
          errors=(400, 404, 409),
          query=(("tail", {"type": "integer", "minimum": 1, "maximum": 10000}), VM_PROJECT),
          description="Tail of the serial console log."),
    Route("GET", "/v1/vms/{vm}/stats", H.show_stats, "showVmStats", returns="VmStats",
          errors=(404, 409), query=(VM_PROJECT,)),
    *(Route("POST", f"/v1/vms/{{vm}}/{action}", H.act, f"{action}Vm", ok=202, returns="Task",
            errors=(404, 409), body=ACTION_OPTIONS.get(action, "NoOptions"), body_required=False,
            query=(VM_PROJECT,), action=action) for action in POWER_ACTIONS),
    Route("GET", "/v1/hosts", H.list_hosts, "listHosts", "admin", returns="HostList"),
    Route("POST", "/v1/hosts", H.create_host, "createHost", "admin", 201, "Host", (409,),
          body="HostCreate",
          description="Connect to a libvirt host and place VMs on it (409 host_unreachable "
                      "when it does not answer)."),
    Route("GET", "/v1/hosts/{host}", H.show_host, "showHost", "admin", returns="Host",
          errors=(404,)),
    Route("PATCH", "/v1/hosts/{host}", H.update_host, "updateHost", "admin", returns="Host",
          errors=(404,), body="HostUpdate", description="enabled: false drains the host."),
    Route("DELETE", "/v1/hosts/{host}", H.delete_host, "deleteHost", "admin", 204,
          errors=(404, 409), description="Only a host without VMs (409 host_not_empty)."),
    Route("GET", "/v1/admin/orphans", H.list_orphans, "listOrphans", "admin", returns="Orphans",
          description="Domains and instance folders of this installation that have no VM record."),
    Route("GET", "/v1/projects", H.list_projects, "listProjects", "admin", returns="ProjectList"),
    Route("GET", "/v1/projects/{project}/quota", H.show_quota, "showQuota", returns="Quota",
          errors=(404,), description="Limits (null: unlimited) and usage."),
    Route("PUT", "/v1/projects/{project}/quota", H.update_quota, "updateQuota", "admin",
          returns="Quota", errors=(404,), body="QuotaUpdate"),
    Route("GET", "/v1/events", H.list_audit_events, "listAuditEvents", returns="AuditEventList",
          errors=(400,), query=(
              ("project", {"type": "string"}),
              ("method", {"type": "string", "enum": ["POST", "PUT", "DELETE"]}),
              ("status", {"type": "integer", "minimum": 100, "maximum": 599}),
              ("resource_id", {"type": "string"}),
              ("limit", PAGE_LIMIT),
              ("marker", {"type": "integer", "minimum": 1})),
          description="The audit trail of mutating requests, newest first (members: their "
                      "project)."),
    Route("POST", "/v1/tokens", H.create_token, "createToken", ok=201, returns="TokenCreated",
          body="TokenCreate", replayable=False,
          description="A new token; its secret is in this answer only. Members: member tokens "
                      "of their own project (403 otherwise). No Idempotency-Key (400): its "
                      "answer would have to be stored."),
    Route("GET", "/v1/tokens", H.list_tokens, "listTokens", returns="TokenList", errors=(400,),
          query=ID_PAGE,
          description="Tokens without their secrets, oldest first: admins every one; members "
                      "their own and those it made."),
    Route("DELETE", "/v1/tokens/{token}", H.delete_token, "deleteToken", ok=204,
          errors=(404,), description="Revoke a token (members: their own and those it made)."),
    Route("GET", "/v1/tasks/{task}", H.show_task, "showTask", returns="Task", errors=(400, 404),
          query=(("wait", {"type": "integer", "minimum": 0, "maximum": 60}),),
          headers=("Retry-After",),
          description="`wait` long-polls until the task ends; when the token or the server "
                      "already holds its share of waits, the task as it is now, with "
                      "Retry-After."),
    *VOLUME_ROUTES,
    *QUEUE_ROUTES,
    *RESERVATION_ROUTES,
    *MOTION_ROUTES,
    *NETWORK_ROUTES,
    *SECURITY_ROUTES,
)
