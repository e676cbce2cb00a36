using System.CommandLine;
using System.CommandLine.Parsing;
using TelemetryAgent.Hosting;
using TelemetryAgent.Sessions;
using TelemetryAgent.Transport;

namespace TelemetryAgent.Cli;

/// <summary>
/// The agent's limits, who may connect, and redaction: options shared by `run` and `serve`, with the defaults of
/// <see cref="AgentLimits"/>, <see cref="SessionLimits"/> and <see cref="PeerAccess"/>.
/// </summary>
internal static class AgentOptions
{
    private static readonly AgentLimits Defaults = AgentLimits.Default;

    private static readonly Option<int> MaxFrameBytes = Limit("--max-frame-bytes", Defaults.Session.MaxFramePayload, 1024, 64 << 20,
        "Largest frame payload a connection may send, in bytes (the shim sends at most 1 MiB); a larger one closes it (FrameTooLarge).");

    private static readonly Option<int> MaxDefinitions = Limit("--max-definitions", Defaults.Session.MaxCodeId, 1, int.MaxValue - 1,
        "Code definitions (functions) one connection may make; one more closes it (TooManyDefinitions).");

    private static readonly Option<int> MaxThreads = Limit("--max-threads", Defaults.Session.MaxThreadId, 1, (int)Protocol.WireFormat.MaxThreadId,
        "Threads one connection may define; one more closes it (TooManyThreads).");

    private static readonly Option<int> MaxStackDepth = Limit("--max-stack-depth", Defaults.Session.MaxStackDepth, 1, 1 << 20,
        "Frames of one thread kept in the call tree; deeper calls are counted (depth_limited_pushes), not stored.");

    private static readonly Option<int> MaxCallTreeNodes = Limit("--max-call-tree-nodes", Defaults.Session.MaxCallTreeNodes, 1, int.MaxValue,
        "Distinct stacks (call-tree nodes) kept per process; calls on new paths beyond it go to a \"[truncated]\" node (truncated_pushes).");

    private static readonly Option<int> MaxConnections = Limit("--max-connections", Defaults.MaxConnections, 1, 1 << 20,
        "Connections served at once; one more is closed at once (TooManyConnections) and its shim retries with backoff.");

    private static readonly Option<int> MaxAggregateMemory = Limit("--max-aggregate-memory-mb", (int)(Defaults.MaxAggregateMemoryBytes >> 20), 1, 1 << 20,
        "Estimated memory, in MiB, for the call trees, functions and threads of all connections; a connection that needs more is closed (AggregateMemoryExhausted).");

    private static readonly Option<string?> SocketGroup = new("--socket-group")
    {
        Description = "A group (name or gid) that may open the socket too: the socket file becomes mode 0660 and owned by it. " +
                      "The agent still accepts only the users of --allow-uid.",
    };

    private static readonly Option<string[]> AllowUid = new("--allow-uid")
    {
        Description = "A user (name or uid) whose processes the agent accepts (repeat for several), checked with SO_PEERCRED on every connection. " +
                      "The agent's own uid and root are always allowed.",
    };

    private static readonly Option<string[]> Redact = new("--redact")
    {
        Description = "A regular expression (.NET syntax) whose matches in exception messages and notes are replaced by [REDACTED] " +
                      "before anything is written or exported; repeat for several. Built-in patterns already cover bearer tokens, " +
                      "AWS keys, GitHub and Slack tokens, JWTs, private keys, passwords in URLs and key=value secrets, and emails.",
    };

    private static readonly Option<string?> RedactFile = new("--redact-file")
    {
        Description = "A file of regular expressions like --redact's, one per line (blank lines and lines starting with # are skipped).",
    };

    private static readonly Option<bool> NoBuiltInRedaction = new("--no-builtin-redaction")
    {
        Description = "Do not apply the built-in redaction patterns (only --redact and --redact-file).",
    };

    /// <summary>The options that take a value (for `run`, which separates its own options from the program's).</summary>
    public static IEnumerable<string> WithValue =>
        All.Where(option => option is not Option<bool>).Select(option => option.Name);

    private static Option[] All =>
    [
        MaxFrameBytes, MaxDefinitions, MaxThreads, MaxStackDepth, MaxCallTreeNodes, MaxConnections, MaxAggregateMemory,
        SocketGroup, AllowUid, Redact, RedactFile, NoBuiltInRedaction,
    ];

    public static void AddTo(Command command)
    {
        foreach (var option in All) command.Options.Add(option);
    }

    /// <summary>What the options say, or an error message for the user.</summary>
    public static (AgentLimits Limits, PeerAccess Access, Redactor Redactor)? Read(ParseResult result, out string? error)
    {
        error = null;
        var limits = new AgentLimits
        {
            MaxConnections = result.GetValue(MaxConnections),
            MaxAggregateMemoryBytes = (long)result.GetValue(MaxAggregateMemory) << 20,
            Session = Defaults.Session with
            {
                MaxFramePayload = result.GetValue(MaxFrameBytes),
                MaxCodeId = result.GetValue(MaxDefinitions),
                MaxThreadId = result.GetValue(MaxThreads),
                MaxStackDepth = result.GetValue(MaxStackDepth),
                MaxCallTreeNodes = result.GetValue(MaxCallTreeNodes),
            },
        };

        uint? group = null;
        if (result.GetValue(SocketGroup) is { Length: > 0 } groupName)
        {
            group = Native.GroupId(groupName);
            if (group is null)
            {
                error = $"--socket-group: no group named {groupName}";
                return null;
            }
        }
        var uids = new SortedSet<uint>(PeerAccess.DefaultUids());
        foreach (var user in result.GetValue(AllowUid) ?? [])
        {
            if (Native.UserId(user) is not { } uid)
            {
                error = $"--allow-uid: no user named {user}";
                return null;
            }
            uids.Add(uid);
        }

        var patterns = new List<string>(result.GetValue(Redact) ?? []);
        Redactor redactor;
        try
        {
            if (result.GetValue(RedactFile) is { Length: > 0 } file) patterns.AddRange(Redactor.ReadPatternFile(file));
            redactor = Redactor.Create(patterns, includeBuiltIn: !result.GetValue(NoBuiltInRedaction));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            error = e is ArgumentException ? $"--redact: {e.Message}" : $"--redact-file: {e.Message}";
            return null;
        }
        return (limits, new PeerAccess(uids, group), redactor);
    }

    private static Option<int> Limit(string name, int defaultValue, int minimum, int maximum, string description)
        => OptionValues.WholeNumber(name, defaultValue, minimum, maximum, description);
}
