"""One module per resource type; ``TYPES`` in goss's order, then bakery's extensions.

``EXTENSIONS`` are NOT goss resource types: goss itself rejects a spec that uses them, so a spec that
must also run under goss leaves them out (or keeps them in a second file that only bakery reads).
"""

from __future__ import annotations

from tasks.verify.resources import (
    command,
    file,
    group,
    kernel_param,
    package,
    pending_updates,
    port,
    process,
    service,
    user,
)
from tasks.verify.resources.base import ResourceType

TYPES: dict[str, ResourceType] = {
    t.name: t
    for t in (
        package.TYPE,
        service.TYPE,
        port.TYPE,
        file.TYPE,
        command.TYPE,
        user.TYPE,
        group.TYPE,
        process.TYPE,
        kernel_param.TYPE,
        pending_updates.TYPE,  # bakery's extension (EXTENSIONS)
    )
}

# bakery's own resource types: not goss, which rejects them.
EXTENSIONS = (pending_updates.TYPE.name,)

# goss types bakery refuses (exit 2), and why.
UNSUPPORTED = {
    "http": "needs a client on the host's network; check it with a command (curl) instead",
    "addr": "reachability from the host; check it with a command instead",
    "dns": "resolution from the host; check it with a command (getent hosts) instead",
    "mount": "not implemented; check it with a command (findmnt) instead",
    "interface": "not implemented; check it with a command (ip addr) instead",
    "gossfile": "includes are not supported; render the spec into one file (goss render)",
    "matching": "not implemented",
}
