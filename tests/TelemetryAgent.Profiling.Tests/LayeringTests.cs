using System.Reflection;
using TelemetryAgent.Hosting;
using TelemetryAgent.Output;
using TelemetryAgent.Protocol;
using TelemetryAgent.Sessions;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>
/// Who may depend on whom, read from each product assembly's references (docs/architecture.md draws it): the model
/// knows nothing above it, the wire stops at the sessions, outputs and exports know the model, not the sessions.
/// </summary>
public sealed class LayeringTests
{
    /// <summary>The references each assembly may have besides the runtime's own (System.*, netstandard).</summary>
    private static readonly Dictionary<Assembly, string[]> Allowed = new()
    {
        [typeof(ProcessProfile).Assembly] = [],
        [typeof(WireParser).Assembly] = ["Google.Protobuf"],
        [typeof(ProcessSession).Assembly] = ["TelemetryAgent.Protocol", "TelemetryAgent.Profiling", "Google.Protobuf"],
        [typeof(FolderExporter).Assembly] = ["TelemetryAgent.Profiling", "TelemetryAgent.Otlp", "Google.Protobuf"],
        // Profiles over gRPC through the generated client; google.rpc.Status and RetryInfo from generated messages.
        [typeof(Export.ExportPipeline).Assembly] =
            ["TelemetryAgent.Profiling", "TelemetryAgent.Otlp", "Google.Protobuf", "OpenTelemetry*", "Microsoft.Extensions.*",
             "Grpc.Core.Api", "Grpc.Net.Client", "Grpc.StatusProto", "Google.Api.CommonProtos"],
        // The OTLP messages with their generated gRPC stubs.
        [typeof(Perftools.Profiles.Profile).Assembly] = ["Google.Protobuf", "Grpc.Core.Api"],
        // The live views: the model and the output files over gRPC and Kestrel; never the sessions or the wire.
        [typeof(Live.LiveQueries).Assembly] =
            ["TelemetryAgent.Profiling", "TelemetryAgent.Output", "Google.Protobuf", "Grpc.*", "Microsoft.AspNetCore*", "Microsoft.Net.Http.Headers",
             "Microsoft.Extensions.*"],
    };

    public static TheoryData<string> Assemblies => new(Allowed.Keys.Select(assembly => assembly.GetName().Name!));

    [Theory]
    [MemberData(nameof(Assemblies))]
    public void References_only_what_its_layer_allows(string name)
    {
        var (assembly, allowed) = Allowed.Single(entry => entry.Key.GetName().Name == name);
        var forbidden = ForbiddenReferences(assembly, allowed);
        Assert.True(forbidden.Length == 0, $"{name} references {string.Join(", ", forbidden)}; it may reference only " +
            (allowed.Length == 0 ? "the runtime" : string.Join(", ", allowed)));
    }

    [Fact]
    public void The_model_uses_no_wire_type_and_no_type_of_a_layer_above_it()
    {
        var model = typeof(ProcessProfile).Assembly;
        var foreign = model.GetTypes()
            .SelectMany(type => type.GetFields(BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)
                .Select(field => field.FieldType)
                .Concat(type.GetProperties(BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)
                    .Select(property => property.PropertyType)))
            .SelectMany(WithTypeArguments)
            .Where(type => type.Assembly != model && type.Namespace?.StartsWith("TelemetryAgent", StringComparison.Ordinal) == true)
            .Select(type => type.FullName)
            .Distinct()
            .ToArray();
        Assert.Empty(foreign);
    }

    /// <summary>The executable may use anything; every product assembly it uses must have its rule above.</summary>
    [Fact]
    public void Every_assembly_the_executable_uses_is_checked()
    {
        var layers = Allowed.Keys.Select(assembly => assembly.GetName().Name).ToHashSet();
        var used = typeof(AgentHost).Assembly.GetReferencedAssemblies()
            .Select(reference => reference.Name!)
            .Where(name => name.StartsWith("TelemetryAgent", StringComparison.Ordinal))
            .ToArray();
        Assert.Equal(6, used.Length);
        Assert.All(used, name => Assert.Contains(name, layers));
    }

    /// <summary>The type, and the types it is built from (a nullable's, a list's, an array's).</summary>
    private static IEnumerable<Type> WithTypeArguments(Type type)
    {
        yield return type;
        var parts = type.HasElementType ? [type.GetElementType()!] : type.IsGenericType ? type.GetGenericArguments() : [];
        foreach (var part in parts.SelectMany(WithTypeArguments)) yield return part;
    }

    private static string[] ForbiddenReferences(Assembly assembly, string[] allowed)
        => assembly.GetReferencedAssemblies()
            .Select(reference => reference.Name!)
            .Where(name => !IsRuntime(name) && !allowed.Any(pattern => Matches(pattern, name)))
            .Order(StringComparer.Ordinal)
            .ToArray();

    private static bool IsRuntime(string name)
        => name is "netstandard" or "mscorlib" || name.StartsWith("System", StringComparison.Ordinal)
           || name.StartsWith("Microsoft.Win32", StringComparison.Ordinal);

    private static bool Matches(string pattern, string name)
        => pattern.EndsWith('*') ? name.StartsWith(pattern[..^1], StringComparison.Ordinal) : name == pattern;
}
