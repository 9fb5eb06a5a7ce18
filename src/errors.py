"""Every error the API can answer with: HTTP status, stable snake_case code, message template."""
from __future__ import annotations

from typing import Any


class HostFailure(Exception):
    """A host-side component (libvirt) failed; the HTTP boundary answers 503."""


class ApiError(Exception):
    """Base: carries what the HTTP boundary needs to build the JSON error envelope."""

    status = 500
    code = "internal_error"
    template = "Internal server error."

    def __init__(self, message: str | None = None, /, **details: Any) -> None:
        self.details = details
        self.message = message or self.template.format(**details)
        super().__init__(self.message)


def _error(name: str, status: int, code: str, template: str) -> type[ApiError]:
    return type(name, (ApiError,), {"status": status, "code": code, "template": template})


# A table, not a tower of classes: one line per error the API can return.
BadRequest = _error("BadRequest", 400, "bad_request", "{reason}")
ValidationFailed = _error("ValidationFailed", 400, "validation_failed", "Request body is invalid.")
InvalidQuery = _error("InvalidQuery", 400, "invalid_query", "Query parameter {field!r} is invalid: {reason}")
IncompleteBody = _error("IncompleteBody", 400, "incomplete_body",
                       "The request body ended before its Content-Length of {length} bytes arrived.")
MalformedJson = _error("MalformedJson", 400, "malformed_json", "Request body is not valid JSON: {reason}")
ImageNotFoundInRequest = _error("ImageNotFoundInRequest", 400, "image_not_found", "Image {image!r} does not exist.")
ImageFileInvalid = _error("ImageFileInvalid", 400, "image_file_invalid", "Image file {file!r} is not usable: {reason}")
DiskTooSmall = _error("DiskTooSmall", 400, "disk_too_small",
                      "disk_gb={disk_gb} is smaller than the image's virtual size ({minimum_gb} GiB).")
MarkerNotFound = _error("MarkerNotFound", 400, "marker_not_found", "Marker {marker!r} is not an item of this list.")
Unauthorized = _error("Unauthorized", 401, "unauthorized",
                      "A valid bearer token is required (Authorization: Bearer <token>).")
Forbidden = _error("Forbidden", 403, "forbidden", "This call needs the admin role.")
QuotaExceeded = _error("QuotaExceeded", 403, "quota_exceeded",
                       "Quota of {resource} exceeded: limit {limit}, {in_use} in use, {requested} requested.")
ProjectNotFound = _error("ProjectNotFound", 404, "project_not_found", "Project {project!r} does not exist.")
IdempotencyKeyReused = _error("IdempotencyKeyReused", 422, "idempotency_key_reused",
                              "This Idempotency-Key was used with a different request.")
IdempotencyKeyInUse = _error("IdempotencyKeyInUse", 409, "idempotency_key_in_use",
                             "A request with this Idempotency-Key is still being answered; retry.")
NotFound = _error("NotFound", 404, "not_found", "No route for {path}.")
VmNotFound = _error("VmNotFound", 404, "vm_not_found", "VM {vm!r} does not exist.")
ImageNotFound = _error("ImageNotFound", 404, "image_not_found", "Image {image!r} does not exist.")
FlavorNotFound = _error("FlavorNotFound", 404, "flavor_not_found", "Flavor {flavor!r} does not exist.")
FlavorNotFoundInRequest = _error("FlavorNotFoundInRequest", 400, "flavor_not_found",
                                 "Flavor {flavor!r} does not exist.")
InsufficientCapacity = _error("InsufficientCapacity", 409, "insufficient_capacity",
                              "Not enough {resource}: {requested} requested, {available} available.")
TokenNotFound = _error("TokenNotFound", 404, "token_not_found", "Token {token!r} does not exist.")
TaskNotFound = _error("TaskNotFound", 404, "task_not_found", "Task {task!r} does not exist.")
MethodNotAllowed = _error("MethodNotAllowed", 405, "method_not_allowed", "{method} is not allowed on {path}.")
VmBusy = _error("VmBusy", 409, "vm_busy", "VM {vm!r} is busy with another task; wait for it to end.")
InvalidState = _error("InvalidState", 409, "invalid_state",
                      "Cannot {action} a VM whose status is {status!r}; allowed now: {allowed}.")
VmNotRunning = _error("VmNotRunning", 409, "vm_not_running", "VM {vm!r} is not running.")
AmbiguousName = _error("AmbiguousName", 409, "ambiguous_name",
                      "VMs of {count} projects are named {name!r}: use an id, or add ?project=.")
NameConflict = _error("NameConflict", 409, "name_conflict", "A {kind} named {name!r} already exists.")
ImageInUse = _error("ImageInUse", 409, "image_in_use", "Image {image!r} is used by {vm_count} VM(s).")
ImageFileMissing = _error("ImageFileMissing", 409, "image_file_missing",
                          "The file {file!r} of image {image!r} is missing from the images directory.")
ImageInvalid = _error("ImageInvalid", 409, "image_invalid",
                      "Image {image!r} is no longer usable: {reason}.")
BodyTooLarge = _error("BodyTooLarge", 413, "body_too_large", "Request body exceeds {limit} bytes.")
UnsupportedMediaType = _error("UnsupportedMediaType", 415, "unsupported_media_type",
                              "Content-Type must be {expected}, not {content_type!r}.")
ServerBusy = _error("ServerBusy", 503, "server_busy",
                    "The server is serving as many connections as it may; retry shortly.")
HypervisorUnavailable = _error("HypervisorUnavailable", 503, "hypervisor_unavailable",
                               "libvirt did not answer: {reason}")
HostNotFound = _error("HostNotFound", 404, "host_not_found", "Host {host!r} does not exist.")
HostNotFoundInRequest = _error("HostNotFoundInRequest", 400, "host_not_found",
                               "Host {host!r} does not exist.")
InsecureUri = _error("InsecureUri", 400, "insecure_uri",
                     "{uri!r} is neither encrypted nor authenticated; use qemu+tls:// or "
                     "qemu+ssh://, or set IAAS_ALLOW_INSECURE_HOSTS=true.")
HostUriNotAllowed = _error("HostUriNotAllowed", 400, "host_uri_not_allowed",
                           "The host URI {uri!r} is not allowed: {reason}")
HostUnreachable = _error("HostUnreachable", 409, "host_unreachable",
                         "libvirt at {uri!r} does not answer: {reason}. libvirt's own message "
                         "is in the server log.")
HostNotEmpty = _error("HostNotEmpty", 409, "host_not_empty",
                      "Host {host!r} still has {vm_count} VM(s); delete them first.")
HostUnavailable = _error("HostUnavailable", 503, "host_unavailable",
                         "Host {host!r} does not answer; retry shortly.")
ImageNotActive = _error("ImageNotActive", 409, "image_not_active",
                        "Image {image!r} is {status}; only an active image can boot a VM.")
ImageNotPending = _error("ImageNotPending", 409, "image_not_pending",
                         "Image {image!r} is {status}; only a pending or failed upload takes a file.")
UploadInProgress = _error("UploadInProgress", 409, "upload_in_progress",
                          "Image {image!r} is receiving another upload; wait for it to end.")
TooManyUploads = _error("TooManyUploads", 429, "too_many_uploads",
                        "Project {project!r} is sending {limit} uploads already; retry when one "
                        "has ended.")
UploadsBusy = _error("UploadsBusy", 503, "uploads_busy",
                     "The server is receiving as many uploads as it may ({limit}); retry shortly.")
UploadTooSlow = _error("UploadTooSlow", 408, "upload_too_slow",
                       "The upload's body came slower than {rate} bytes/s over {window_s} s.")
TooManyConnections = _error("TooManyConnections", 429, "too_many_connections",
                            "This address holds {limit} connections already; retry when one has "
                            "closed.")
ChecksumMismatch = _error("ChecksumMismatch", 422, "checksum_mismatch",
                          "The file's SHA-256 is {actual}, not the {expected} given.")
UrlNotAllowed = _error("UrlNotAllowed", 400, "url_not_allowed", "The URL {url!r} is refused: {reason}")
KeypairNotFound = _error("KeypairNotFound", 404, "keypair_not_found",
                         "Keypair {keypair!r} does not exist.")
KeypairNotFoundInRequest = _error("KeypairNotFoundInRequest", 400, "keypair_not_found",
                                  "Keypair {keypair!r} does not exist.")

# Volumes, attachments and snapshots (issue 22).
VolumeNotFound = _error("VolumeNotFound", 404, "volume_not_found", "Volume {volume!r} does not exist.")
VolumeNotFoundInRequest = _error("VolumeNotFoundInRequest", 400, "volume_not_found",
                                 "Volume {volume!r} does not exist.")
VolumeTooSmall = _error("VolumeTooSmall", 400, "volume_too_small",
                        "size_gb={size_gb} is smaller than the image's virtual size ({minimum_gb} GiB).")
VolumeCannotShrink = _error("VolumeCannotShrink", 400, "volume_cannot_shrink",
                            "A volume only grows: size_gb={size_gb} is not above its {current_gb} GiB.")
MultiattachRequiresReadOnly = _error("MultiattachRequiresReadOnly", 400,
                                     "multiattach_requires_read_only",
                                     "Volume {volume!r} is multiattach: it attaches read-only only.")
VolumeInUse = _error("VolumeInUse", 409, "volume_in_use", "Volume {volume!r} is in use: {reason}")
VolumeBusy = _error("VolumeBusy", 409, "volume_busy",
                    "Volume {volume!r} is busy with another task; wait for it to end.")
VolumeNotAvailable = _error("VolumeNotAvailable", 409, "volume_not_available",
                            "Volume {volume!r} is {status}; only an available volume can {action}.")
VolumeOnOtherHost = _error("VolumeOnOtherHost", 409, "volume_on_other_host",
                           "Volume {volume!r} is on host {volume_host!r}, the VM on {vm_host!r}.")
VolumesOnSeveralHosts = _error("VolumesOnSeveralHosts", 409, "volumes_on_several_hosts",
                               "The volumes asked for live on several hosts: {hosts}.")
VolumeNotAttached = _error("VolumeNotAttached", 404, "volume_not_attached",
                           "Volume {volume!r} is not attached to VM {vm!r}.")
TooManyVolumes = _error("TooManyVolumes", 409, "too_many_volumes",
                        "VM {vm!r} has {limit} volumes attached already.")
TooManySnapshots = _error("TooManySnapshots", 409, "too_many_snapshots",
                          "{owner!r} has {limit} snapshots already; delete one first.")
SnapshotNotFound = _error("SnapshotNotFound", 404, "snapshot_not_found",
                          "Snapshot {snapshot!r} does not exist.")
SnapshotNotFoundInRequest = _error("SnapshotNotFoundInRequest", 400, "snapshot_not_found",
                                   "Snapshot {snapshot!r} does not exist.")
SnapshotNotAvailable = _error("SnapshotNotAvailable", 409, "snapshot_not_available",
                              "Snapshot {snapshot!r} is {status}.")
VmNotStopped = _error("VmNotStopped", 409, "vm_not_stopped",
                      "VM {vm!r} is {status}; stop it first.")

# Reservations of GPUs for time windows (issue 23).
ReservationNotFound = _error("ReservationNotFound", 404, "reservation_not_found",
                             "Reservation {reservation!r} does not exist.")
ReservationNotFoundInRequest = _error("ReservationNotFoundInRequest", 400, "reservation_not_found",
                                      "Reservation {reservation!r} does not exist.")
ReservationInPast = _error("ReservationInPast", 400, "reservation_in_past",
                           "The window must not start in the past: start {start} is before now "
                           "({now}); use \"now\".")
ReservationEndBeforeStart = _error("ReservationEndBeforeStart", 400, "reservation_end_before_start",
                                   "end {end} must be after start {start}.")
ReservationTooFar = _error("ReservationTooFar", 400, "reservation_too_far",
                           "The window must end within {horizon_days} days "
                           "(IAAS_RESERVATION_HORIZON_DAYS): end {end} is after {latest}.")
ReservationBadTime = _error("ReservationBadTime", 400, "reservation_bad_time",
                            "{field} {value!r} is not an RFC 3339 time (e.g. "
                            "2026-12-24T09:00:00Z) or \"now\".")
FlavorWithoutGpus = _error("FlavorWithoutGpus", 400, "flavor_without_gpus",
                           "Flavor {flavor!r} asks for no whole GPUs; only GPU flavors are "
                           "reserved.")
ReservationConflict = _error("ReservationConflict", 409, "reservation_conflict",
                             "{count} VM(s) of {flavor!r} do not fit for the whole window; "
                             "the same window fits from {next_start}.")
ReservationFull = _error("ReservationFull", 409, "reservation_full",
                         "Reservation {reservation!r} already runs its {count} VM(s).")
ReservationNotActive = _error("ReservationNotActive", 409, "reservation_not_active",
                              "Reservation {reservation!r} is {status}: its window is "
                              "{start} to {end}.")
ReservationFlavorMismatch = _error("ReservationFlavorMismatch", 409, "reservation_flavor_mismatch",
                                   "Reservation {reservation!r} is for flavor {expected!r}, "
                                   "not {flavor!r}.")
ReservationClosed = _error("ReservationClosed", 409, "reservation_closed",
                           "Reservation {reservation!r} is {status} already.")
# Hosts in motion (issue 24).
VmNotMigratable = _error("VmNotMigratable", 409, "vm_not_migratable",
                         "VM {vm!r} cannot be migrated: {reason}.")
HostNotDown = _error("HostNotDown", 409, "host_not_down",
                     "Host {host!r} answers: only a host that is down is evacuated; drain it "
                     "to move its VMs away.")
# Networks (issue 24).
NetworkNotFound = _error("NetworkNotFound", 404, "network_not_found",
                         "Host {host!r} has no network {network!r}.")
NetworkNotFoundInRequest = _error("NetworkNotFoundInRequest", 400, "network_not_found",
                                  "No host offers an active network {network!r}.")
NetworkInvalid = _error("NetworkInvalid", 400, "network_invalid", "{reason}")
NetworkUnavailable = _error("NetworkUnavailable", 409, "network_unavailable",
                            "No host that could take the VM offers every network asked for "
                            "({networks}): {reason}.")
NetworkInUse = _error("NetworkInUse", 409, "network_in_use",
                      "Network {network!r} on host {host!r} is in use: {reason}.")
NetworkNotManaged = _error("NetworkNotManaged", 409, "network_not_managed",
                           "Network {network!r} on host {host!r} was not defined through this "
                           "API, so it is not removed through it; remove it on the host "
                           "(virsh net-destroy, net-undefine) if you mean to.")
NetworkSubnetConflict = _error("NetworkSubnetConflict", 409, "network_subnet_conflict",
                               "Subnet {subnet} overlaps {other_subnet} of network {other!r} "
                               "on host {host!r}.")
NetworkDefineFailed = _error("NetworkDefineFailed", 409, "network_define_failed",
                             "libvirt on host {host!r} refused network {network!r}: {reason}")

# Security groups (issue 24).
SecurityGroupNotFound = _error("SecurityGroupNotFound", 404, "security_group_not_found",
                               "Security group {group!r} does not exist.")
SecurityGroupNotFoundInRequest = _error("SecurityGroupNotFoundInRequest", 400,
                                        "security_group_not_found",
                                        "Security group {group!r} does not exist.")
SecurityGroupInUse = _error("SecurityGroupInUse", 409, "security_group_in_use",
                            "Security group {group!r} is in use: {reason}.")
SecurityGroupRuleNotFound = _error("SecurityGroupRuleNotFound", 404,
                                   "security_group_rule_not_found",
                                   "Rule {rule!r} is not in security group {group!r}.")
SecurityGroupNotAttached = _error("SecurityGroupNotAttached", 404, "security_group_not_attached",
                                  "Security group {group!r} is not attached to VM {vm!r}.")
TooManyRules = _error("TooManyRules", 409, "too_many_rules",
                      "Security group {group!r} has {limit} rules already.")
