using TelemetryAgent.Profiling;

namespace TelemetryAgent.Export.Tests;

public sealed class ProcessResourceTests
{
    private static ProcessIdentity Identity(string serviceName = "", string resourceAttributes = "", long pid = 4242) => new(
        Pid: pid, ParentPid: 1, Argv: ["/srv/app/worker.py", "--queue", "mail"], Executable: "/usr/bin/python3.12",
        PythonImplementation: "CPython", PythonVersion: "3.12.1", HostName: "web-1",
        ServiceName: ProcessIdentity.ServiceNameOf(serviceName, ["/srv/app/worker.py", "--queue", "mail"], "/usr/bin/python3.12"),
        ResourceAttributes: resourceAttributes, ShimVersion: "1", WorkingDirectory: "/srv/app", ProcessStartUnixNs: 1_700_000_000_000_000_000);

    private static Dictionary<string, object> AttributesOf(ProcessIdentity identity)
        => ProcessResource.Attributes(identity).ToDictionary(a => a.Key, a => a.Value);

    [Fact]
    public void DescribesTheProcessFromItsHello()
    {
        var attributes = AttributesOf(Identity());
        Assert.Equal("worker", attributes["service.name"]);
        Assert.Equal(4242L, attributes["process.pid"]);
        Assert.Equal(1L, attributes["process.parent_pid"]);
        Assert.Equal("/usr/bin/python3.12", attributes["process.executable.path"]);
        Assert.Equal(new[] { "/usr/bin/python3.12", "/srv/app/worker.py", "--queue", "mail" }, attributes["process.command_args"]);
        Assert.Equal("cpython", attributes["process.runtime.name"]);
        Assert.Equal("3.12.1", attributes["process.runtime.version"]);
        Assert.Equal("web-1", attributes["host.name"]);
        Assert.True(Guid.TryParse((string)attributes["service.instance.id"], out var id));
        Assert.Equal(5, id.Version);
    }

    [Fact]
    public void InstanceIdIsTheUuidV5OfHostPidAndStartTime()
    {
        // Python: uuid.uuid5(uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320"), "web-1/4242/1700000000000000000")
        Assert.Equal("39f5d3f8-d424-5fc0-9e07-960c06ba4c4e", ProcessResource.ServiceInstanceId(Identity()));
    }

    [Fact]
    public void WithoutAKnownInterpreterTheCommandIsArgvAlone()
    {
        var attributes = AttributesOf(Identity() with { Executable = "" });
        Assert.Equal(new[] { "/srv/app/worker.py", "--queue", "mail" }, attributes["process.command_args"]);
        Assert.False(attributes.ContainsKey("process.executable.path"));
    }

    [Fact]
    public void InstanceIdIsStablePerProcessAndDiffersBetweenProcesses()
    {
        Assert.Equal(ProcessResource.ServiceInstanceId(Identity()), ProcessResource.ServiceInstanceId(Identity()));
        Assert.NotEqual(ProcessResource.ServiceInstanceId(Identity()), ProcessResource.ServiceInstanceId(Identity(pid: 4243)));
    }

    [Fact]
    public void ResourceAttributesOfTheProcessAreAddedAndWinOverDerivedOnes()
    {
        var attributes = AttributesOf(Identity(resourceAttributes: " deployment.environment.name = prod ,host.name=web-1.example,team=a%2Cb%3Dc%20%C3%A9"));
        Assert.Equal("prod", attributes["deployment.environment.name"]);
        Assert.Equal("web-1.example", attributes["host.name"]);
        Assert.Equal("a,b=c é", attributes["team"]);
    }

    [Fact]
    public void The_container_and_pod_of_the_cgroup_are_named_unless_the_downward_api_names_them()
    {
        const string container = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        const string pod = "1f3c2a4e-5b6d-4c7e-8f90-a1b2c3d4e5f6";
        var fromCgroup = AttributesOf(Identity() with { ContainerId = container, PodUid = pod });
        Assert.Equal(container, fromCgroup["container.id"]);
        Assert.Equal(pod, fromCgroup["k8s.pod.uid"]);

        var fromDownwardApi = AttributesOf(Identity(resourceAttributes: "k8s.pod.uid=from-env") with { PodUid = pod });
        Assert.Equal("from-env", fromDownwardApi["k8s.pod.uid"]);

        var outsideContainers = AttributesOf(Identity());
        Assert.False(outsideContainers.ContainsKey("container.id"));
        Assert.False(outsideContainers.ContainsKey("k8s.pod.uid"));
    }

    [Fact]
    public void ServiceNamePrecedence_OtelServiceName_then_ResourceAttributes_then_argv()
    {
        Assert.Equal("from-attributes", AttributesOf(Identity(resourceAttributes: "service.name=from-attributes"))["service.name"]);
        Assert.Equal("configured", AttributesOf(Identity("configured", "service.name=from-attributes"))["service.name"]);
    }

    [Theory]
    [InlineData("novalue")]
    [InlineData("=value")]
    [InlineData("a=1,b=%G1")]
    [InlineData("a=%2")]
    public void A_malformed_value_is_discarded_whole(string value)
    {
        Assert.Null(ProcessResource.ParseEnvironmentAttributes(value));
        var attributes = AttributesOf(Identity(resourceAttributes: value));
        Assert.DoesNotContain("a", attributes.Keys);
        Assert.Equal("worker", attributes["service.name"]);
    }

    [Fact]
    public void EmptyEntriesAreSkipped()
    {
        Assert.Equal([new("a", "1"), new("b", "")], ProcessResource.ParseEnvironmentAttributes("a=1,, b= ,"));
        Assert.Empty(ProcessResource.ParseEnvironmentAttributes("")!);
    }
}
