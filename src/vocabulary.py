"""The platform's words, defined once: statuses, actions and their options, quota resources, roles.

Services, DAOs, the OpenAPI document and the docs all import these; nothing restates them.
"""
from __future__ import annotations

# queued: accepted with wait_for_capacity, it fits nowhere yet and holds nothing (issue 23).
VM_STATUSES = ("queued", "building", "running", "stopped", "paused", "error", "deleting")
TASK_STATUSES = ("queued", "running", "succeeded", "failed")
ACTIVE_TASK_STATUSES = ("queued", "running")
POWER_ACTIONS = ("start", "shutdown", "stop", "reboot", "pause", "resume")
# Volume tasks (issue 22): of a volume, of an attachment (VM + volume), of a VM's root disk.
VOLUME_ACTIONS = ("volume_create", "volume_delete", "volume_resize", "volume_snapshot",
                  "volume_revert", "snapshot_delete")
ATTACHMENT_ACTIONS = ("attach", "detach")
VM_DISK_ACTIONS = ("vm_snapshot", "vm_revert", "vm_image")
MOTION_ACTIONS = ("migrate", "evacuate")  # a VM moved to, or rebuilt on, another host
NOTICE = "notice"  # a finished entry in a VM's history only: the platform told it something
TASK_ACTIONS = ("create", "delete", *POWER_ACTIONS, "import", NOTICE,  # import: of an image, not a VM
                *VOLUME_ACTIONS, *ATTACHMENT_ACTIONS, *VM_DISK_ACTIONS, *MOTION_ACTIONS,
                "firewall")  # firewall: refresh VMs' nwfilters (security groups)
VM_ACTIONS = (*POWER_ACTIONS, "delete")  # what a VM's `actions` list may hold
# The request body schema each power action takes (the others take none).
ACTION_OPTIONS = {"shutdown": "ShutdownOptions", "reboot": "RebootOptions"}
# images, keypairs and tokens are counts of rows: a project's images (any status), keypairs, and
# live tokens its members made (unrevoked, unexpired); volumes a count, volumes_gb their sizes;
# security_groups a count of the project's groups.
QUOTA_RESOURCES = ("instances", "vcpus", "ram", "gpus", "disk_gb", "images_gb", "images",
                   "keypairs", "tokens", "volumes", "volumes_gb", "security_groups")
ROLES = ("admin", "member")
IMAGE_FORMATS = ("qcow2", "raw")
# pending: waits for its bytes (an upload); importing: a task downloads them; only active boots.
# missing_file is never stored: an active image whose file is not in IAAS_IMAGES_DIR (a seeded
# image before its file came) is shown so, and becomes active again when the file is there.
IMAGE_STATUSES = ("pending", "importing", "active", "missing_file", "error")
IMAGE_VISIBILITIES = ("public", "private")
# The owner of every public image: a name no project can have (project names start with a
# letter or digit), so no token belongs to it and no member owns a public image.
PUBLIC_IMAGES_OWNER = "_public"
# Who may call a route: anyone, any valid token, or an admin token.
ACCESS_LEVELS = ("public", "member", "admin")
# The resource a placement shortfall names; when several tie, the scarcest kind comes first.
CAPACITY_RESOURCES = ("gpu", "pcpu", "vcpu", "ram", "disk")
GPU_STATUSES = ("free", "allocated", "unavailable")
GPU_UNAVAILABLE_REASONS = ("iommu_group_shared", "no_iommu_group", "not_present")
# A VM's libvirt domain is named this prefix + its id (VMs created before 009 keep their name).
DOMAIN_NAME_PREFIX = "iaas-"
# A volume's status; in-use is shown, never stored: an available volume with attachments.
VOLUME_STATUSES = ("creating", "available", "in-use", "deleting", "error")
ATTACHMENT_STATUSES = ("attaching", "attached", "detaching")
SNAPSHOT_STATUSES = ("creating", "available", "deleting", "error")
# What a VM in the capacity queue waits for: a placement shortfall, or a host (none answers).
# GPU partitions: mediated devices (mdev types) or SR-IOV virtual functions; the type id under
# which a GPU's virtual functions are offered.
PARTITION_KINDS = ("mdev", "vf")
VF_TYPE = "sriov_vf"
QUEUE_REASONS = (*CAPACITY_RESOURCES, "host")
# The executor of a create task whose VM waits for capacity: no executor has it until placed.
QUEUE_EXECUTOR = "queue"
WAITING_FOR_CAPACITY = "waiting_for_capacity"  # such a task's details.reason
# A reservation's status: the clock's progress through its window, or cancelled.
RESERVATION_STATUSES = ("pending", "active", "ended", "cancelled")
OPEN_RESERVATION = ("pending", "active")
# Why the platform stopped a VM (its task's reason, shown in the VM's history).
PREEMPTED = "preempted: reservation {reservation}"
# A notice's reason: the VM runs on GPUs a reservation claims from start; it is stopped then.
PREEMPTION_NOTICE = "preemption notice: reservation {reservation} starts at {start}"
RESERVATION_ENDED = "reservation_ended"
MAX_RUNTIME_REACHED = "max_runtime_reached"  # its run lasted its max_runtime_s
