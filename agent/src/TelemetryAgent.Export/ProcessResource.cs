using System.Security.Cryptography;
using System.Text;
using TelemetryAgent.Aggregation;

namespace TelemetryAgent.Export;

/// <summary>
/// The OTLP resource of one Python process, from its HELLO: every signal the agent exports for that process
/// (metrics, logs, profiles) carries exactly these attributes, so backends join them.
/// </summary>
/// <remarks>
/// Values are <see cref="string"/>, <see cref="long"/> or <see cref="string"/>[] (what the SDK's resource builder
/// and the profiles encoder both accept). The process's own <c>OTEL_RESOURCE_ATTRIBUTES</c> come last and win over
/// what the agent derived, as an SDK inside the process would merge them; <c>service.name</c> follows the SDK's
/// precedence: <c>OTEL_SERVICE_NAME</c> (or <c>--service-name</c>), then <c>service.name</c> in
/// <c>OTEL_RESOURCE_ATTRIBUTES</c>, then the name the agent derived from argv.
/// </remarks>
public static class ProcessResource
{
    // The namespace the semantic conventions give for UUID v5 service.instance.id values.
    private static readonly Guid ServiceInstanceNamespace = new("4d63009a-8d0f-11ee-aad7-4c796ed8e320");

    public static IReadOnlyList<KeyValuePair<string, object>> Attributes(ProcessIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identity);
        var fromEnvironment = ParseEnvironmentAttributes(identity.ResourceAttributes) ?? [];
        var serviceNameConfigured = identity.ServiceName != ProcessIdentity.ServiceNameOf("", identity.Argv, identity.Executable);

        var attributes = new List<KeyValuePair<string, object>>(16);
        void Set(string key, object value)
        {
            var index = attributes.FindIndex(attribute => attribute.Key == key);
            if (index >= 0) attributes[index] = new(key, value);
            else attributes.Add(new(key, value));
        }

        Set("service.name", identity.ServiceName);
        Set("service.instance.id", ServiceInstanceId(identity));
        Set("process.pid", identity.Pid);
        Set("process.parent_pid", identity.ParentPid);
        if (identity.Executable.Length > 0) Set("process.executable.path", identity.Executable);
        // The command as the process received it: the interpreter (when known), then sys.argv.
        Set("process.command_args", identity.Executable.Length > 0 ? [identity.Executable, .. identity.Argv] : identity.Argv.ToArray());
        Set("process.runtime.name", identity.PythonImplementation.ToLowerInvariant());
        Set("process.runtime.version", identity.PythonVersion);
        if (identity.HostName.Length > 0) Set("host.name", identity.HostName);
        foreach (var (key, value) in fromEnvironment)
        {
            if (key == "service.name" && serviceNameConfigured) continue;
            Set(key, value);
        }
        return attributes;
    }

    /// <summary>
    /// A UUID v5 of host, pid and process start time: the same for every signal and every reconnection of one
    /// process, different for the next process that reuses the pid.
    /// </summary>
    public static string ServiceInstanceId(ProcessIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identity);
        return UuidV5(ServiceInstanceNamespace, $"{identity.HostName}/{identity.Pid}/{identity.ProcessStartUnixNs}").ToString();
    }

    /// <summary>
    /// Parses <c>OTEL_RESOURCE_ATTRIBUTES</c>: <c>key=value</c> pairs separated by commas, whitespace trimmed, values
    /// percent-decoded. Returns null when the value is malformed: the specification discards all of it then.
    /// </summary>
    public static IReadOnlyList<KeyValuePair<string, string>>? ParseEnvironmentAttributes(string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) return [];
        var attributes = new List<KeyValuePair<string, string>>();
        foreach (var item in value.Split(',', StringSplitOptions.TrimEntries))
        {
            if (item.Length == 0) continue;
            var equals = item.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0) return null;
            var key = item[..equals].Trim();
            if (key.Length == 0) return null;
            attributes.Add(new(key, Uri.UnescapeDataString(item[(equals + 1)..].Trim())));
        }
        return attributes;
    }

    // RFC 9562 section 5.5: SHA-1 of namespace and name (both in network order), version and variant bits set.
    private static Guid UuidV5(Guid ns, string name)
    {
        Span<byte> input = stackalloc byte[16];
        ns.TryWriteBytes(input, bigEndian: true, out _);
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var buffer = new byte[16 + nameBytes.Length];
        input.CopyTo(buffer);
        nameBytes.CopyTo(buffer, 16);
        Span<byte> hash = stackalloc byte[20];
        SHA1.HashData(buffer, hash);
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash[..16], bigEndian: true);
    }
}
