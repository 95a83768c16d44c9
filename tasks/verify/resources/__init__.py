"""One module per resource type; ``TYPES`` in goss's order, then bakery's extensions.

``EXTENSIONS`` are NOT goss resource types: goss itself rejects a spec that uses them, so a spec that
must also run under goss leaves them out (or keeps them in a second file that only bakery reads).
"""

from __future__ import annotations

from tasks.verify.resources import (
    addr,
    command,
    dns,
    file,
    group,
    http,
    interface,
    kernel_param,
    matching,
    mount,
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
        mount.TYPE,
        interface.TYPE,
        http.TYPE,
        addr.TYPE,
        dns.TYPE,
        matching.TYPE,
        pending_updates.TYPE,  # bakery's extension (EXTENSIONS)
    )
}

# bakery's own resource types: not goss, which rejects them.
EXTENSIONS = (pending_updates.TYPE.name,)

# goss types bakery refuses (exit 2), and why: none left — every goss type a host can be asked about is here.
UNSUPPORTED: dict[str, str] = {}
