"""Which container and pod a process runs in, from the /proc files of the layouts the kubelet and the
container engines make (the texts below are theirs, ids made up), and from this machine's own /proc in a real
process's HELLO."""

import os
import unittest

from tests import support
from telemetry_shim import _container

CONTAINER = "3f2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b"
POD = "1f3c2a4e-5b6d-4c7e-8f90-a1b2c3d4e5f6"


def no_mountinfo():
    raise AssertionError("mountinfo read although the cgroup paths are visible")


class FromProcTests(unittest.TestCase):
    def test_kubernetes_cgroup_v1_with_the_cgroupfs_driver(self):
        cgroup = "\n".join("%d:%s:/kubepods/burstable/pod%s/%s" % (n, c, POD, CONTAINER)
                           for n, c in ((12, "memory"), (3, "cpu,cpuacct"), (1, "name=systemd")))
        self.assertEqual((CONTAINER, POD), _container.from_proc(cgroup, no_mountinfo))

    def test_kubernetes_guaranteed_pod_cgroup_v1(self):
        cgroup = "4:pids:/kubepods/pod%s/%s\n" % (POD, CONTAINER)
        self.assertEqual((CONTAINER, POD), _container.from_proc(cgroup, no_mountinfo))

    def test_kubernetes_with_systemds_driver_and_each_engine(self):
        slice_pod = POD.replace("-", "_")
        for engine in ("cri-containerd", "crio", "docker"):
            cgroup = ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/%s-%s.scope\n"
                      % (slice_pod, engine, CONTAINER))
            self.assertEqual((CONTAINER, POD), _container.from_proc(cgroup, no_mountinfo), engine)

    def test_docker_outside_kubernetes(self):
        self.assertEqual((CONTAINER, ""), _container.from_proc("11:devices:/docker/%s\n" % CONTAINER, no_mountinfo))
        self.assertEqual((CONTAINER, ""),
                         _container.from_proc("0::/system.slice/docker-%s.scope\n" % CONTAINER, no_mountinfo))

    def test_a_private_cgroup_namespace_is_read_through_the_mounts(self):
        kubelet = ("2201 2184 8:1 /var/lib/kubelet/pods/%s/etc-hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw\n"
                   "2202 2184 8:1 /var/lib/kubelet/pods/%s/containers/app/5d1c9a2e /dev/termination-log rw - ext4 /dev/sda1 rw\n"
                   % (POD, POD))
        self.assertEqual(("", POD), _container.from_proc("0::/\n", lambda: kubelet))
        docker = ("612 591 8:1 /var/lib/docker/containers/%s/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw\n"
                  % CONTAINER)
        self.assertEqual((CONTAINER, ""), _container.from_proc("0::/\n", lambda: docker))

    def test_a_host_or_a_sandbox_that_is_not_a_container_names_nothing(self):
        for cgroup in ("0::/user.slice/user-1000.slice/session-3.scope\n",
                       "4:memory:/process_api/aadfbf1e403eafb4e0a698b3e95eaba3\n0::/\n",
                       "0::/system.slice/podman.service\n",
                       "", "garbage without colons\n",
                       "0::/kubepods/podnot-a-uuid/%s-tooshort\n" % CONTAINER[:40]):
            self.assertEqual(("", ""), _container.from_proc(cgroup, lambda: ""), cgroup)

    def test_unreadable_proc_gives_nothing_and_never_raises(self):
        def broken():
            raise OSError("no mountinfo")
        self.assertEqual(("", ""), _container.from_proc("0::/\n", lambda: ""))
        with self.assertRaises(OSError):  # from_proc lets it through: container_and_pod() is the guard
            _container.from_proc("0::/\n", broken)


class HelloTests(unittest.TestCase):
    def test_a_real_process_sends_what_its_own_proc_files_say(self):
        with open("/proc/self/cgroup", encoding="utf-8") as file:
            cgroup = file.read()
        with open("/proc/self/mountinfo", encoding="utf-8") as file:
            mountinfo = file.read()
        container, pod = _container.from_proc(cgroup, lambda: mountinfo)  # the child is in the same cgroup
        with support.RecordingAgent() as agent:
            returncode, _, stderr = support.run_python(
                "import telemetry_shim\nassert telemetry_shim.start()\n", env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual(0, returncode, stderr)
            hello = agent.wait_for(1, timeout=30)[0].hello
        self.assertEqual(container, hello.get("container_id", ""))
        self.assertEqual(pod, hello.get("pod_uid", ""))


if __name__ == "__main__":
    unittest.main()
