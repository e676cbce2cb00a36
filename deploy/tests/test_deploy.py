"""Checks deploy/ without a container engine or a cluster (neither exists here): systemd-analyze verifies the
units; every agent command line (systemd ExecStart, the image's ENTRYPOINT, the DaemonSet's args) uses only
options that the real agent's `serve --help` lists, with values of the right kind; the files agree with each
other and with the repository (socket paths, groups and uids, the published layout, the shim's autostart
directory, shutdown deadlines).

    TELEMETRY_AGENT_DLL=.../telemetry-agent.dll python3 -m unittest discover -s deploy/tests   (PyYAML: python3-yaml)
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
REPO = DEPLOY.parent
INSTALL_DIR = "/opt/telemetry-agent"  # where the systemd unit and the image put the published agent
AGENT_DLL = INSTALL_DIR + "/telemetry-agent.dll"


def serve_options(command="serve"):
    """{option: takes a value} from the real agent's `<command> --help`."""
    dll = os.environ.get("TELEMETRY_AGENT_DLL")
    if not dll or not os.path.exists(dll):
        raise unittest.SkipTest("TELEMETRY_AGENT_DLL does not name a built agent (scripts/test sets it)")
    help_text = subprocess.run(["dotnet", dll, command, "--help"], capture_output=True, text=True, timeout=60,
                               check=True).stdout
    options = {}
    for match in re.finditer(r"^\s+(?:-\w, )?(--[\w-]+)( <[^>]+>)?", help_text, re.MULTILINE):
        options[match.group(1)] = match.group(2) is not None
    return options


def agent_arguments(argv, command="serve"):
    """The `serve` (or `status`) arguments of an agent command line, as [(option, value or None)]."""
    words = list(argv)
    assert command in words, argv
    words = words[words.index(command) + 1:]
    parsed, options = [], SERVE_OPTIONS if command == "serve" else STATUS_OPTIONS
    while words:
        word = words.pop(0)
        if word.startswith("$"):
            continue  # an environment variable of extra options, expanded at start
        name, _, inline = word.partition("=")
        if name not in options:
            raise AssertionError(f"{name} is not an option of `telemetry-agent {command}` ({argv})")
        if options[name]:
            value = inline or (words.pop(0) if words else None)
            if value is None or value.startswith("--"):
                raise AssertionError(f"{name} needs a value ({argv})")
            parsed.append((name, value))
        else:
            parsed.append((name, None))
    return parsed


def values(arguments, option):
    return [value for name, value in arguments if name == option]


def one(arguments, option):
    found = values(arguments, option)
    assert len(found) == 1, (option, arguments)
    return found[0]


def unit_settings(path):
    """[(section, key, value)] of a systemd unit file (repeated keys kept, comments and blanks skipped)."""
    settings, section = [], None
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


def setting(settings, section, key):
    found = [value for s, k, value in settings if s == section and k == key]
    assert found, f"[{section}] {key}= missing"
    return found[-1]


def environment(settings):
    env = {}
    for section, key, value in settings:
        if section == "Service" and key == "Environment":
            name, _, text = value.partition("=")
            env[name] = text
    return env


def published_path(path):
    """The repository file that the published agent has at `path` (the shim ships next to the agent)."""
    prefix = INSTALL_DIR + "/python-shim"
    assert path == prefix or path.startswith(prefix + "/"), path
    return REPO / "python-shim" / path[len(prefix):].lstrip("/")


SERVE_OPTIONS = {}
STATUS_OPTIONS = {}


def setUpModule():
    SERVE_OPTIONS.update(serve_options())
    STATUS_OPTIONS.update(serve_options("status"))


class SystemdTest(unittest.TestCase):
    unit = DEPLOY / "systemd" / "telemetry-agent.service"
    drop_in = DEPLOY / "systemd" / "python-service-autostart.conf"

    def verify(self, path):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed")
        result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        # What it says of this unit or of a file next to it (its drop-ins); not of the host's own units.
        ours = [line for line in (result.stdout + result.stderr).splitlines()
                if pathlib.Path(path).name in line or str(pathlib.Path(path).parent) in line]
        self.assertEqual([], ours)
        self.assertEqual(0, result.returncode, result.stderr)

    def test_the_agent_unit_passes_systemd_analyze(self):
        self.verify(self.unit)

    def test_the_drop_in_passes_systemd_analyze_on_a_service(self):
        with tempfile.TemporaryDirectory() as folder:
            service = pathlib.Path(folder) / "python-app.service"
            service.write_text("[Service]\nExecStart=/usr/bin/python3 -c pass\n", encoding="utf-8")
            (pathlib.Path(folder) / "python-app.service.d").mkdir()
            shutil.copy(self.drop_in, pathlib.Path(folder) / "python-app.service.d" / "telemetry.conf")
            self.verify(service)  # systemd-analyze reads the drop-in with it, and names it in what it finds

    def test_exec_start_is_the_installed_agent_with_valid_options(self):
        settings = unit_settings(self.unit)
        argv = shlex.split(setting(settings, "Service", "ExecStart"))
        self.assertEqual(["/usr/bin/dotnet", AGENT_DLL, "serve"], argv[:3])
        arguments = agent_arguments(argv)
        socket = one(arguments, "--socket")
        self.assertEqual("/run/" + setting(settings, "Service", "RuntimeDirectory"), os.path.dirname(socket))
        state = "/var/lib/" + setting(settings, "Service", "StateDirectory")
        for option in ("--output", "--otlp-retry-directory"):
            self.assertTrue(one(arguments, option).startswith(state + "/"), option)
        self.assertGreater(int(setting(settings, "Service", "TimeoutStopSec")), int(one(arguments, "--shutdown-timeout")))
        self.assertEqual("SIGTERM", setting(settings, "Service", "KillSignal"))
        # The agent sends READY=1 itself (sd_notify from its main process, which ExecStart runs directly).
        self.assertEqual("notify", setting(settings, "Service", "Type"))
        notify_access = [value for section, key, value in settings if section == "Service" and key == "NotifyAccess"]
        self.assertIn((notify_access or ["main"])[-1], ("main", "exec"))
        # Priority over the services it watches.
        self.assertGreater(int(setting(settings, "Service", "CPUWeight")), 100)
        self.assertLess(int(setting(settings, "Service", "Nice")), 0)

    def test_the_drop_in_reaches_the_agents_socket_with_the_shim_on_its_path(self):
        agent = unit_settings(self.unit)
        arguments = agent_arguments(shlex.split(setting(agent, "Service", "ExecStart")))
        service = unit_settings(self.drop_in)
        env = environment(service)
        self.assertEqual(one(arguments, "--socket"), env["TELEMETRY_AGENT_SOCKET"])
        self.assertEqual(one(arguments, "--socket-group"), setting(service, "Service", "SupplementaryGroups"))
        self.assertEqual("1", env["TELEMETRY_SHIM_AUTOSTART"])
        self.assertIn(env.get("TELEMETRY_SHIM_MODE", "burst"), ("full", "burst", "exceptions"))
        autostart, shim = env["PYTHONPATH"].split(":")
        self.assertTrue((published_path(autostart) / "sitecustomize.py").is_file(), autostart)
        self.assertTrue((published_path(shim) / "telemetry_shim" / "__init__.py").is_file(), shim)


class ContainerfileTest(unittest.TestCase):
    path = DEPLOY / "container" / "Containerfile"

    def instructions(self):
        text = self.path.read_text(encoding="utf-8").replace("\\\n", " ")
        return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]

    def test_copies_only_what_exists_and_publishes_the_agent_project(self):
        instructions = self.instructions()
        sources = [args.split()[:-1] for op, args in instructions if op == "COPY" and not args.startswith("--from")]
        self.assertTrue(sources)
        for source in (s for group in sources for s in group):
            self.assertTrue((REPO / source).exists(), source)
        publish = next(args for op, args in instructions if op == "RUN" and "dotnet publish" in args)
        project = shlex.split(publish)[2]
        self.assertTrue((REPO / project).is_file(), project)
        self.assertIn("<AssemblyName>telemetry-agent</AssemblyName>", (REPO / project).read_text(encoding="utf-8"))
        # Everything the project's build reads is copied: the shared props, the protos, the shim it ships.
        copied = {s.rstrip("/") for group in sources for s in group}
        self.assertTrue({"Directory.Build.props", "proto", "agent/src", "python-shim/telemetry_shim"} <= copied, copied)

    def test_images_match_the_target_framework_and_the_agent_runs_unprivileged(self):
        instructions = self.instructions()
        framework = re.search(r"<TargetFramework>net(\d+\.\d+)</TargetFramework>",
                              (REPO / "Directory.Build.props").read_text(encoding="utf-8")).group(1)
        images = [args.split()[0] for op, args in instructions if op == "FROM"]
        dotnet = [image for image in images if image.startswith("mcr.microsoft.com/dotnet/")]
        self.assertEqual(2, len(dotnet))
        self.assertTrue(all(image.endswith(":" + framework) for image in dotnet), images)
        self.assertTrue(images[-1].startswith("mcr.microsoft.com/dotnet/aspnet:"), images)  # what runs
        user = [args for op, args in instructions if op == "USER"]
        self.assertEqual(["$APP_UID"], user)  # the .NET images' non-root user
        self.assertEqual(f"--from=build /out {INSTALL_DIR}",
                         next(args for op, args in instructions if op == "COPY" and args.startswith("--from=build")))

    def test_the_shim_ships_its_c_callbacks_for_every_python_the_test_command_covers(self):
        # One build stage per CPython minor version the shim supports (the test command builds and tests the
        # extension on each), on that version's image, running the shim's own build step; their extensions are
        # copied into the shim before the publish, which ships python-shim/telemetry_shim/*.so.
        instructions = self.instructions()
        stages = {args.split()[2]: args.split()[0] for op, args in instructions if op == "FROM" and " AS " in args.upper()}
        native = {name: image for name, image in stages.items() if name.startswith("native-")}
        self.assertEqual({"native-3.12": "python:3.12-bookworm", "native-3.13": "python:3.13-bookworm"}, native)
        builds = [args for op, args in instructions if op == "RUN" and "telemetry_shim_native.py" in args]
        self.assertEqual(len(native), len(builds))
        for build in builds:
            self.assertIn("--require", build)
            self.assertTrue((REPO / "python-shim/build_backend/telemetry_shim_native.py").is_file())
        order = [(op, args) for op, args in instructions if op in ("FROM", "COPY", "RUN")]
        publish = next(i for i, (op, args) in enumerate(order) if op == "RUN" and "dotnet publish" in args)
        for name in native:
            copy = next(i for i, (op, args) in enumerate(order)
                        if op == "COPY" and args.startswith(f"--from={name} ") and args.endswith(" python-shim/telemetry_shim/"))
            self.assertLess(copy, publish, name)
        project = (REPO / "agent/src/TelemetryAgent/TelemetryAgent.csproj").read_text(encoding="utf-8")
        self.assertIn('Include="../../../python-shim/telemetry_shim/*.so"', project)

    def test_the_entrypoint_is_the_published_agent_with_valid_options(self):
        entrypoint = json.loads(next(args for op, args in self.instructions() if op == "ENTRYPOINT"))
        self.assertEqual(["dotnet", AGENT_DLL, "serve"], entrypoint[:3])
        arguments = agent_arguments(entrypoint)
        volumes = json.loads(next(args for op, args in self.instructions() if op == "VOLUME"))
        self.assertIn(os.path.dirname(one(arguments, "--socket")), volumes)
        self.assertIn(os.path.dirname(one(arguments, "--output")), volumes)

    def test_the_build_context_leaves_build_outputs_out(self):
        ignored = (DEPLOY / "container" / "Containerfile.dockerignore").read_text(encoding="utf-8").split()
        self.assertTrue({"**/bin/", "**/obj/"} <= set(ignored), ignored)


class KubernetesTest(unittest.TestCase):
    @staticmethod
    def documents(name):
        with open(DEPLOY / "kubernetes" / name, encoding="utf-8") as file:
            return [doc for doc in yaml.safe_load_all(file) if doc]

    def workload(self, name, kind):
        found = [doc for doc in self.documents(name) if doc["kind"] == kind]
        self.assertEqual(1, len(found), kind)
        for key in ("apiVersion", "metadata"):
            self.assertIn(key, found[0])
        return found[0]["spec"]["template"]["spec"]

    @staticmethod
    def mount_of(container, pod, path):
        """(volume, path inside it) of the mount that holds `path`."""
        for mount in container["volumeMounts"]:
            prefix = mount["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix):
                volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
                return volume, path[len(prefix):]
        raise AssertionError(f"{path} is in no volume of {container['name']}")

    def agent(self):
        pod = self.workload("daemonset.yaml", "DaemonSet")
        container = next(c for c in pod["containers"] if c["name"] == "agent")
        return pod, container, agent_arguments(container["args"])

    def test_the_agents_args_are_valid_and_its_deadline_fits_the_grace_period(self):
        pod, container, arguments = self.agent()
        self.assertEqual("serve", container["args"][0])
        self.assertEqual("json", one(arguments, "--log-format"))
        self.assertGreater(pod["terminationGracePeriodSeconds"], int(one(arguments, "--shutdown-timeout")))
        self.assertIn(pod["priorityClassName"],
                      [d["metadata"]["name"] for d in self.documents("daemonset.yaml") if d["kind"] == "PriorityClass"])
        security = container["securityContext"]
        self.assertTrue(security["runAsNonRoot"])
        self.assertFalse(security["allowPrivilegeEscalation"])
        self.assertEqual(pod["containers"][0]["image"], pod["initContainers"][0]["image"])

    def test_the_app_reaches_the_agents_socket_and_is_allowed(self):
        agent_pod, agent, arguments = self.agent()
        app_pod = self.workload("example-app.yaml", "Deployment")
        app = next(c for c in app_pod["containers"] if c["name"] == "app")
        env = {e["name"]: e.get("value") for e in app["env"]}
        agent_volume, agent_file = self.mount_of(agent, agent_pod, one(arguments, "--socket"))
        app_volume, app_file = self.mount_of(app, app_pod, env["TELEMETRY_AGENT_SOCKET"])
        self.assertEqual(agent_volume["hostPath"]["path"], app_volume["hostPath"]["path"])
        self.assertEqual(agent_file, app_file)
        # The socket's group and the allowed uids cover the app.
        security = app_pod["securityContext"]
        self.assertIn(int(one(arguments, "--socket-group")), security["supplementalGroups"])
        self.assertIn(str(security["runAsUser"]), values(arguments, "--allow-uid"))
        # The socket directory is handed to the agent's user and that group before the agent starts.
        chown = " ".join(agent_pod["initContainers"][0]["command"])
        self.assertIn(f"chown {agent['securityContext']['runAsUser']}:{one(arguments, '--socket-group')} "
                      + os.path.dirname(one(arguments, "--socket")), chown)

    def test_the_probes_ask_this_agent_with_valid_status_options(self):
        pod, container, arguments = self.agent()
        checks = {}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = container[probe]["exec"]["command"]
            self.assertEqual(["dotnet", AGENT_DLL, "status"], command[:3], probe)
            status = agent_arguments(command, "status")
            # The agent's own socket: `status` finds the query socket beside it, as `serve` puts it.
            self.assertEqual(one(arguments, "--socket"), one(status, "--socket"), probe)
            self.assertNotIn("--query-socket", [name for name, _ in arguments])
            checks[probe] = one(status, "--check")
            # A probe's own deadline is longer than what `status` waits for the agent.
            self.assertGreater(container[probe]["timeoutSeconds"], float(one(status, "--timeout")), probe)
        self.assertEqual({"startupProbe": "ready", "livenessProbe": "live", "readinessProbe": "ready"}, checks)

    def test_the_app_gets_the_shim_from_the_agents_image_and_autostarts_it(self):
        _, agent, _ = self.agent()
        app_pod = self.workload("example-app.yaml", "Deployment")
        app = next(c for c in app_pod["containers"] if c["name"] == "app")
        init = app_pod["initContainers"][0]
        self.assertEqual(agent["image"], init["image"])
        copy = shlex.split(init["command"][-1])
        self.assertEqual("cp", copy[0])
        source, target = copy[-2].rstrip("."), copy[-1]
        env = {e["name"]: e.get("value") for e in app["env"]}
        self.assertEqual("1", env["TELEMETRY_SHIM_AUTOSTART"])
        for entry in env["PYTHONPATH"].split(":"):
            self.assertTrue(entry.startswith(target.rstrip("/")), entry)
            published = published_path(source + entry[len(target.rstrip("/")) + 1:])
            self.assertTrue(published.is_dir(), published)
        self.assertTrue((published_path(source + "telemetry_shim/autostart") / "sitecustomize.py").is_file())
        version = re.search(r"python:(\d+)\.(\d+)", app["image"])
        self.assertGreaterEqual((int(version.group(1)), int(version.group(2))), (3, 12))  # sys.monitoring


if __name__ == "__main__":
    unittest.main()


class LambdaLayerTest(unittest.TestCase):
    """deploy/lambda: the layer's scripts, run for real where they can be (the end-to-end suite runs the extension
    against an emulator of Lambda's APIs; no Lambda here), and their layout against build-layer.sh's."""

    LAMBDA = DEPLOY / "lambda"
    EXTENSION = LAMBDA / "layer" / "extensions" / "telemetry-agent"
    WRAPPER = LAMBDA / "layer" / "telemetry-agent" / "exec-wrapper"
    BUILD = LAMBDA / "build-layer.sh"

    def test_the_scripts_are_posix_shell_and_executable(self):
        for script in (self.EXTENSION, self.WRAPPER, self.BUILD):
            with self.subTest(script=script.name):
                self.assertTrue(script.read_text(encoding="utf-8").startswith("#!/bin/sh\n"))
                self.assertTrue(os.access(script, os.X_OK), f"{script} is not executable")
                subprocess.run(["sh", "-n", str(script)], check=True)

    def test_the_extension_runs_the_launcher_or_the_published_agent_under_its_own_file_name_with_valid_options(self):
        text = self.EXTENSION.read_text(encoding="utf-8")
        build = self.BUILD.read_text(encoding="utf-8")
        launcher_line, agent_line = [shlex.split(l.strip()) for l in text.splitlines() if l.strip().startswith("exec ")]
        # /opt/extensions/<name> -> /opt/telemetry-agent/, where build-layer.sh publishes the apphost and the launcher.
        self.assertIn("case $0 in */*) here=${0%/*}/.. ;; *) here=.. ;; esac", text)
        self.assertIn("name=${0##*/}", text)
        self.assertIn('-o "$layer/telemetry-agent"', build)
        self.assertIn('-o "$layer/telemetry-agent/extension-launcher" "$here/extension-launcher.c"', build)
        self.assertEqual(["exec", "$here/telemetry-agent/extension-launcher", "$here/telemetry-agent/telemetry-agent", "$name", "$@"],
                         launcher_line)
        self.assertEqual(["exec", "$here/telemetry-agent/telemetry-agent", "lambda-extension", "--name", "$name", "$@"], agent_line)
        options = serve_options("lambda-extension")
        # What the launcher hands the agent (extension-launcher.c), each an option that takes a value.
        source = (self.LAMBDA / "extension-launcher.c").read_text(encoding="utf-8")
        for option in ("--name", "--socket", "--listen-fd", "--extension-id", "--event-fd"):
            with self.subTest(option=option):
                self.assertIn('"%s"' % option, source)
                self.assertTrue(options[option], "%s takes a value" % option)

    def test_the_wrapper_starts_the_runtime_under_the_shim(self):
        python = os.environ.get("TELEMETRY_PYTHON")
        if not python:
            raise unittest.SkipTest("TELEMETRY_PYTHON does not name a Python 3.12+ (scripts/test sets it)")
        with tempfile.TemporaryDirectory() as opt:
            agent = pathlib.Path(opt) / "telemetry-agent"
            agent.mkdir()
            shutil.copy2(self.WRAPPER, agent / "exec-wrapper")
            # The published layout: the shim beside the agent (the agent project's python-shim link).
            (agent / "python-shim").symlink_to(REPO / "python-shim")
            project = (REPO / "agent/src/TelemetryAgent/TelemetryAgent.csproj").read_text(encoding="utf-8")
            self.assertIn('LinkBase="python-shim/telemetry_shim"', project)
            env = {key: value for key, value in os.environ.items() if not key.startswith(("TELEMETRY_", "PYTHON"))}
            env.update(AWS_LAMBDA_FUNCTION_NAME="orders", _HANDLER="handlers.handle",
                       TELEMETRY_AGENT_SOCKET=os.path.join(opt, "absent.sock"))
            program = "import sys; print('telemetry_shim' in sys.modules, sys.argv[1:])"
            result = subprocess.run([str(agent / "exec-wrapper"), python, "-c", program, "a b", "c"], env=env,
                                    capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual("True ['a b', 'c']", result.stdout.strip())
