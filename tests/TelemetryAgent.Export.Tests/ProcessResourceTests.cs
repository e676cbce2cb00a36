using TelemetryAgent.Aggregation;

namespace TelemetryAgent.Export.Tests;

public sealed class ProcessResourceTests
{
    private static ProcessIdentity Identity(string configuredServiceName = "", string resourceAttributes = "")
    {
        string[] argv = ["/srv/app/app.py", "--port", "8080"];
        return new ProcessIdentity(
            Pid: 4242, ParentPid: 1, Argv: argv, Executable: "/usr/bin/python3.12", PythonImplementation: "cpython",
            PythonVersion: "3.12.1", HostName: "build-host",
            ServiceName: ProcessIdentity.ServiceNameOf(configuredServiceName, argv, "/usr/bin/python3.12"),
            ResourceAttributes: resourceAttributes, ShimVersion: "0.1.0", WorkingDirectory: "/srv/app",
            ProcessStartUnixNs: 1_700_000_000_123_456_789);
    }

    [Fact]
    public void Every_attribute_comes_from_the_handshake_with_the_semantic_convention_types()
    {
        var attributes = ProcessResource.Attributes(Identity());

        Assert.Equal(
            [
                "service.name", "service.instance.id", "process.pid", "process.parent_pid", "process.executable.path",
                "process.command_args", "process.runtime.name", "process.runtime.version", "host.name",
            ],
            attributes.Select(attribute => attribute.Key));
        var byKey = attributes.ToDictionary(attribute => attribute.Key, attribute => attribute.Value);
        Assert.Equal("app", byKey["service.name"]);
        // uuid.uuid5(uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320"), "build-host/4242/1700000000123456789") in Python.
        Assert.Equal("e1ad29b3-7078-5d54-bfd4-ab63af148e9a", byKey["service.instance.id"]);
        Assert.Equal(4242L, byKey["process.pid"]);
        Assert.Equal(1L, byKey["process.parent_pid"]);
        Assert.Equal("/usr/bin/python3.12", byKey["process.executable.path"]);
        Assert.Equal(new[] { "/usr/bin/python3.12", "/srv/app/app.py", "--port", "8080" }, byKey["process.command_args"]);
        Assert.Equal("cpython", byKey["process.runtime.name"]);
        Assert.Equal("3.12.1", byKey["process.runtime.version"]);
        Assert.Equal("build-host", byKey["host.name"]);
    }

    [Fact]
    public void The_processs_resource_attributes_are_decoded_and_win_except_over_a_configured_service_name()
    {
        var attributes = ProcessResource.Attributes(Identity(resourceAttributes: "deployment.environment.name=prod , team=a%2Cb,host.name=node-7,service.name=shop"))
            .ToDictionary(attribute => attribute.Key, attribute => attribute.Value);
        Assert.Equal("prod", attributes["deployment.environment.name"]);
        Assert.Equal("a,b", attributes["team"]);
        Assert.Equal("node-7", attributes["host.name"]);
        Assert.Equal("shop", attributes["service.name"]);

        var configured = ProcessResource.Attributes(Identity(configuredServiceName: "checkout", resourceAttributes: "service.name=shop"));
        Assert.Equal("checkout", configured.Single(attribute => attribute.Key == "service.name").Value);
    }

    [Theory]
    [InlineData("novalue")]
    [InlineData("a=1,=2")]
    [InlineData("a=1,b")]
    public void A_malformed_OTEL_RESOURCE_ATTRIBUTES_is_discarded_whole(string value)
    {
        Assert.Null(ProcessResource.ParseEnvironmentAttributes(value));
        var attributes = ProcessResource.Attributes(Identity(resourceAttributes: value));
        Assert.DoesNotContain(attributes, attribute => attribute.Key == "a");
        Assert.Equal(9, attributes.Count);
    }

    [Fact]
    public void Without_a_known_interpreter_the_command_is_argv_and_there_is_no_executable_path()
    {
        var attributes = ProcessResource.Attributes(Identity() with { Executable = "" })
            .ToDictionary(attribute => attribute.Key, attribute => attribute.Value);
        Assert.Equal(new[] { "/srv/app/app.py", "--port", "8080" }, attributes["process.command_args"]);
        Assert.False(attributes.ContainsKey("process.executable.path"));
    }

    [Fact]
    public void The_instance_id_differs_for_another_process_that_reuses_the_pid()
    {
        var first = Identity();
        var second = first with { ProcessStartUnixNs = first.ProcessStartUnixNs + 1 };
        Assert.Equal(ProcessResource.ServiceInstanceId(first), ProcessResource.ServiceInstanceId(first));
        Assert.NotEqual(ProcessResource.ServiceInstanceId(first), ProcessResource.ServiceInstanceId(second));
    }
}
