"""Which container and Kubernetes pod the process runs in, as /proc tells it: what the agent puts in the
process's resource as `container.id` and `k8s.pod.uid` where OTEL_RESOURCE_ATTRIBUTES does not say (a pod
that sets no downward-API variables is still told apart from its neighbours on the node).

Read once per process, on the sender thread when it first connects; nothing here raises. Sources:
- /proc/self/cgroup: the kubelet names a pod's cgroup after its uid (`.../pod<uid>/<container id>` with the
  cgroupfs driver, `.../kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope` with systemd's),
  and container engines name a container's cgroup after its id (`/docker/<id>`, `docker-<id>.scope`,
  `crio-<id>.scope`);
- /proc/self/mountinfo, only when the cgroup paths are all `/` (cgroup v2 with a private cgroup namespace,
  the default for containers there): the kubelet mounts the pod's /etc/hosts from `.../pods/<uid>/etc-hosts`,
  and Docker its /etc/hostname from `.../docker/containers/<id>/hostname`.
String operations only: `re` would cost its import in every process that never needed it."""

import os

_HEX = frozenset("0123456789abcdef")
_UUID_DASHES = (8, 13, 18, 23)

_identity = None


def container_and_pod():
    """(container id, pod uid), each "" when not found; read on the first call."""
    global _identity
    if _identity is None:
        try:
            _identity = from_proc(_read("/proc/self/cgroup"), lambda: _read("/proc/self/mountinfo"))
        except Exception:
            _identity = ("", "")
    return _identity


def from_proc(cgroup, read_mountinfo):
    """(container id, pod uid) from the text of /proc/self/cgroup, and of mountinfo (read_mountinfo()) when
    the cgroup paths are hidden."""
    container = pod = ""
    paths = [line.split(":", 2)[2] for line in cgroup.splitlines() if line.count(":") >= 2]
    for path in paths:
        pod = pod or _uuid_after(path, "pod", underscores=True)
        container = container or _container_in_cgroup(path)
    if paths and all(path == "/" for path in paths) and not (pod and container):
        for line in read_mountinfo().splitlines():
            pod = pod or _uuid_after(line, "/pods/")
            container = container or _hex64_after(line, "/docker/containers/")
    return container, pod


def _container_in_cgroup(path):
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(".scope"):
        name = name[:-len(".scope")]
    name = name.rsplit("-", 1)[-1]  # docker-<id>, cri-containerd-<id>, crio-<id>
    return name if len(name) == 64 and _HEX.issuperset(name) else ""


def _uuid_after(text, marker, underscores=False):
    start = text.find(marker)
    while start >= 0:
        candidate = text[start + len(marker):start + len(marker) + 36]
        if underscores:
            candidate = candidate.replace("_", "-")
        if (len(candidate) == 36 and all(candidate[i] == "-" for i in _UUID_DASHES)
                and _HEX.issuperset(candidate.replace("-", "")) and candidate.count("-") == 4):
            return candidate
        start = text.find(marker, start + 1)
    return ""


def _hex64_after(text, marker):
    start = text.find(marker)
    if start < 0:
        return ""
    candidate = text[start + len(marker):start + len(marker) + 64]
    return candidate if len(candidate) == 64 and _HEX.issuperset(candidate) else ""


def _read(path):
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        size = 0
        while size < 1 << 20:  # mountinfo can be long on a busy host; what matters is near its start
            chunk = os.read(descriptor, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(descriptor)
