"""Checks collector-config/*.yaml without a collector binary (none can be installed here): each file is YAML,
every component a pipeline names is defined and every defined one is used, memory_limiter comes first, only
components known to handle a signal are in its pipeline, the agent-side collector listens where the agent
sends by default, and the gateway has a pipeline for every signal the agent-side collector forwards.

    python3 -m unittest discover -s collector-config/tests     (needs PyYAML: Debian's python3-yaml)
"""

import pathlib
import re
import unittest

import yaml

HERE = pathlib.Path(__file__).resolve().parent.parent
REPO = HERE.parent
SIGNALS = {"traces", "metrics", "logs", "profiles"}
SECTIONS = ("receivers", "processors", "exporters")

# The component types these files use, and the signals each handles (collector and contrib documentation).
KNOWN = {
    "receivers": {"otlp": SIGNALS},
    "processors": {"memory_limiter": SIGNALS, "batch": {"traces", "metrics", "logs"}, "k8sattributes": SIGNALS},
    "exporters": {
        "otlp_grpc": SIGNALS,
        "otlp_http": SIGNALS,
        "prometheusremotewrite": {"metrics"},
    },
}
ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")


def load(*names):
    """The files merged as the collector merges several --config: maps merged, anything else replaced."""
    def merge(base, overlay):
        if isinstance(base, dict) and isinstance(overlay, dict):
            return {**base, **{key: merge(base.get(key), value) for key, value in overlay.items()}}
        return overlay

    config = None
    for name in names:
        with open(HERE / name, encoding="utf-8") as file:
            config = merge(config, yaml.safe_load(file))
    return config


def component_type(component_id):
    return component_id.split("/", 1)[0]


class ConfigChecks:
    name = None
    overlays = ()

    def setUp(self):
        self.config = load(self.name, *self.overlays)

    def test_is_a_mapping_with_the_collector_sections(self):
        self.assertIsInstance(self.config, dict)
        for section in (*SECTIONS, "service"):
            self.assertIsInstance(self.config.get(section), dict, section)
        self.assertIsInstance(self.config["service"].get("pipelines"), dict)

    def test_pipelines_use_defined_components_and_every_component_is_used(self):
        used = {section: set() for section in SECTIONS}
        for pipeline_id, pipeline in self.config["service"]["pipelines"].items():
            signal = component_type(pipeline_id)
            self.assertIn(signal, SIGNALS, pipeline_id)
            self.assertTrue(pipeline.get("receivers"), f"{pipeline_id} has no receiver")
            self.assertTrue(pipeline.get("exporters"), f"{pipeline_id} has no exporter")
            for section in SECTIONS:
                for component in pipeline.get(section) or []:
                    self.assertIn(component, self.config[section], f"{pipeline_id} names undefined {section} {component}")
                    kind = component_type(component)
                    self.assertIn(kind, KNOWN[section], f"{component}: unknown type")
                    self.assertIn(signal, KNOWN[section][kind], f"{component} does not handle {signal}")
                    used[section].add(component)
        for section in SECTIONS:
            self.assertEqual(set(self.config[section]), used[section], f"{section} defined but unused")

    def test_memory_limiter_comes_first(self):
        for pipeline_id, pipeline in self.config["service"]["pipelines"].items():
            processors = pipeline.get("processors") or []
            self.assertTrue(processors, f"{pipeline_id} has no memory_limiter")
            self.assertEqual("memory_limiter", processors[0], pipeline_id)

    def test_environment_references_are_well_formed(self):
        for name in (self.name, *self.overlays):
            text = (HERE / name).read_text(encoding="utf-8")
            for reference in ENV_REFERENCE.findall(text):
                self.assertRegex(reference, r"^env:[A-Z_][A-Z0-9_]*(:-[^}]+)?$")

    def test_every_signal_has_a_pipeline(self):
        signals = {component_type(p) for p in self.config["service"]["pipelines"]}
        self.assertEqual(SIGNALS, signals)


class AgentConfig(ConfigChecks, unittest.TestCase):
    name = "agent.yaml"

    def test_listens_where_the_agent_sends_by_default(self):
        settings = (REPO / "agent/src/TelemetryAgent.Export/Settings/OtlpSettings.cs").read_text(encoding="utf-8")
        grpc_port = re.search(r'DefaultGrpcEndpoint = "http://localhost:(\d+)"', settings).group(1)
        http_port = re.search(r'DefaultHttpEndpoint = "http://localhost:(\d+)"', settings).group(1)
        protocols = self.config["receivers"]["otlp"]["protocols"]
        self.assertEqual(grpc_port, protocols["grpc"]["endpoint"].rsplit(":", 1)[1])
        self.assertEqual(http_port, protocols["http"]["endpoint"].rsplit(":", 1)[1])

    def test_forwards_every_signal_to_the_gateway(self):
        for pipeline_id, pipeline in self.config["service"]["pipelines"].items():
            self.assertEqual(["otlp_grpc/gateway"], pipeline["exporters"], pipeline_id)


class AgentConfigInKubernetes(AgentConfig):
    overlays = ("kubernetes.yaml",)

    def test_k8sattributes_follows_memory_limiter_in_every_pipeline(self):
        for pipeline_id, pipeline in self.config["service"]["pipelines"].items():
            self.assertEqual(["memory_limiter", "k8sattributes"], pipeline["processors"][:2], pipeline_id)
        # The overlay changes nothing else.
        base = load(self.name)
        for pipeline_id, pipeline in base["service"]["pipelines"].items():
            merged = self.config["service"]["pipelines"][pipeline_id]
            self.assertEqual(pipeline["processors"], [p for p in merged["processors"] if p != "k8sattributes"], pipeline_id)
            self.assertEqual(pipeline["exporters"], merged["exporters"])

    def test_pods_are_matched_on_the_attributes_the_example_app_sets(self):
        # The connection's IP is the node agent's for every process: only resource attributes can tell pods apart.
        rules = self.config["processors"]["k8sattributes"]["pod_association"]
        sources = [[(s["from"], s["name"]) for s in rule["sources"]] for rule in rules]
        self.assertEqual([[("resource_attribute", "k8s.pod.uid")],
                          [("resource_attribute", "k8s.pod.name"), ("resource_attribute", "k8s.namespace.name")]], sources)
        with open(REPO / "deploy/kubernetes/example-app.yaml", encoding="utf-8") as file:
            app = next(doc for doc in yaml.safe_load_all(file) if doc and doc["kind"] == "Deployment")
        container = next(c for c in app["spec"]["template"]["spec"]["containers"] if c["name"] == "app")
        env = {e["name"]: e for e in container["env"]}
        attributes = dict(pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
        # Each value a downward API field of the pod, through a variable defined before it ($(VAR) expansion).
        names = list(env)
        for key, field in (("k8s.pod.uid", "metadata.uid"), ("k8s.pod.name", "metadata.name"),
                           ("k8s.namespace.name", "metadata.namespace")):
            variable = re.fullmatch(r"\$\((\w+)\)", attributes[key]).group(1)
            self.assertEqual(field, env[variable]["valueFrom"]["fieldRef"]["fieldPath"], key)
            self.assertLess(names.index(variable), names.index("OTEL_RESOURCE_ATTRIBUTES"), key)
        self.assertEqual(container["name"], attributes["k8s.container.name"])
        self.assertEqual("K8S_NODE_NAME", self.config["processors"]["k8sattributes"]["filter"]["node_from_env_var"])


class GatewayConfig(ConfigChecks, unittest.TestCase):
    name = "gateway.yaml"

    def test_fans_out_each_signal_to_its_backend(self):
        pipelines = self.config["service"]["pipelines"]
        self.assertEqual(["otlp_grpc/tempo"], pipelines["traces"]["exporters"])
        self.assertEqual(["prometheusremotewrite"], pipelines["metrics"]["exporters"])
        self.assertEqual(["otlp_http/loki"], pipelines["logs"]["exporters"])
        self.assertEqual(["otlp_grpc/pyroscope"], pipelines["profiles"]["exporters"])
        self.assertTrue(self.config["exporters"]["otlp_http/loki"]["endpoint"].endswith("/otlp}"))

    def test_no_delta_conversion_because_the_agent_sends_cumulative(self):
        # If the agent ever sends delta, a deltatocumulative processor must go before prometheusremotewrite.
        exporter = (REPO / "agent/src/TelemetryAgent.Export/Sdk/OtlpSdk.cs").read_text(encoding="utf-8")
        self.assertIn("MetricReaderTemporalityPreference.Cumulative", exporter)
        self.assertNotIn("deltatocumulative", self.config["processors"])


if __name__ == "__main__":
    unittest.main()
