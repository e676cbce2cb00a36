using System.Security.Cryptography;
using System.Text;
using TelemetryAgent.Export.Serverless;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Export;

/// <summary>
/// The OTLP resource of one Python process, from its HELLO. Every signal exported for that process (metrics, logs,
/// profiles) carries exactly these attributes, so that backends join them; no two processes ever share one.
/// </summary>
/// <remarks>
/// Values are <see cref="string"/>, <see cref="long"/> or <see cref="string"/>[]. The process's own
/// <c>OTEL_RESOURCE_ATTRIBUTES</c> are applied last and win over what the agent derived, as an SDK inside the
/// process would merge them, except for <c>service.name</c>, which follows the SDK's precedence:
/// <c>OTEL_SERVICE_NAME</c> (or <c>run --service-name</c>), then <c>service.name</c> in
/// <c>OTEL_RESOURCE_ATTRIBUTES</c>, then the name derived from argv (<see cref="ProcessIdentity.ServiceNameOf"/>).
/// </remarks>
public static class ProcessResource
{
    // The namespace the semantic conventions suggest for UUID v5 service.instance.id values.
    private static readonly Guid InstanceIdNamespace = new("4d63009a-8d0f-11ee-aad7-4c796ed8e320");

    public static IReadOnlyList<KeyValuePair<string, object>> Attributes(ProcessIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identity);
        // A name equal to the derived one was not configured (or was configured to that same name: no difference).
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
        // What the process was started with: the interpreter (when known), then sys.argv as the shim found it.
        Set("process.command_args", identity.Executable.Length > 0 ? [identity.Executable, .. identity.Argv] : identity.Argv.ToArray());
        Set("process.runtime.name", identity.PythonImplementation.Length > 0 ? identity.PythonImplementation.ToLowerInvariant() : "cpython");
        Set("process.runtime.version", identity.PythonVersion);
        if (identity.HostName.Length > 0) Set("host.name", identity.HostName);
        // From the process's cgroup: what tells pods apart when no downward-API variable does (those, below, win).
        if (identity.ContainerId.Length > 0) Set("container.id", identity.ContainerId);
        if (identity.PodUid.Length > 0) Set("k8s.pod.uid", identity.PodUid);
        foreach (var (key, value) in ServerlessResource.Attributes(identity.PlatformEnvironment)) Set(key, value);

        foreach (var (key, value) in ParseEnvironmentAttributes(identity.ResourceAttributes) ?? [])
        {
            if (key == "service.name" && serviceNameConfigured) continue;
            Set(key, value);
        }
        return attributes;
    }

    /// <summary>
    /// A UUID v5 (RFC 9562) of host name, pid and process start time: the same for every signal and every
    /// reconnection of one process, a new one when another process reuses the pid.
    /// </summary>
    public static string ServiceInstanceId(ProcessIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identity);
        var name = Encoding.UTF8.GetBytes($"{identity.HostName}/{identity.Pid}/{identity.ProcessStartUnixNs}");
        var input = new byte[16 + name.Length];
        InstanceIdNamespace.TryWriteBytes(input, bigEndian: true, out _);
        name.CopyTo(input, 16);
        var hash = SHA1.HashData(input);
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50); // version 5
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80); // RFC 9562 variant
        return new Guid(hash.AsSpan(0, 16), bigEndian: true).ToString();
    }

    /// <summary>
    /// <c>OTEL_RESOURCE_ATTRIBUTES</c> as the specification reads it: <c>key=value</c> pairs separated by commas,
    /// whitespace around keys and values trimmed, both percent-decoded (UTF-8). Returns null when the value is
    /// malformed (an entry without a key or <c>=</c>, a bad percent sequence): the specification discards the
    /// whole variable then. Empty entries (<c>a=1,,b=2</c>) are skipped.
    /// </summary>
    public static IReadOnlyList<KeyValuePair<string, string>>? ParseEnvironmentAttributes(string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) return [];
        var attributes = new List<KeyValuePair<string, string>>();
        foreach (var entry in value.Split(','))
        {
            if (entry.Trim().Length == 0) continue;
            var equals = entry.IndexOf('=', StringComparison.Ordinal);
            if (equals < 0) return null;
            if (PercentDecode(entry[..equals].Trim()) is not { Length: > 0 } key) return null;
            if (PercentDecode(entry[(equals + 1)..].Trim()) is not { } decoded) return null;
            attributes.Add(new(key, decoded));
        }
        return attributes;
    }

    /// <summary>Decodes <c>%XX</c> sequences as UTF-8 bytes; null when a sequence is cut short or not hex.</summary>
    private static string? PercentDecode(string text)
    {
        if (!text.Contains('%', StringComparison.Ordinal)) return text;
        var bytes = new List<byte>(text.Length);
        var plainStart = 0;
        for (var i = 0; i <= text.Length; i++)
        {
            if (i < text.Length && text[i] != '%') continue;
            bytes.AddRange(Encoding.UTF8.GetBytes(text[plainStart..i]));
            if (i == text.Length) break;
            if (i + 2 >= text.Length || !char.IsAsciiHexDigit(text[i + 1]) || !char.IsAsciiHexDigit(text[i + 2])) return null;
            bytes.Add(Convert.ToByte(text.Substring(i + 1, 2), 16));
            i += 2;
            plainStart = i + 1;
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
