namespace TelemetryAgent.Export.Python;

/// <summary>
/// The names of what the agent exports about Python processes (proto/OTLP.md, "Metrics and logs"): semantic-convention
/// names where one exists (semconv v1.33+ <c>code.*</c>, <c>exception.*</c>, <c>thread.*</c>), ours under
/// <c>python.profile.</c> otherwise.
/// </summary>
public static class PythonTelemetryNames
{
    /// <summary>The meter's and the logger's instrumentation scope.</summary>
    public const string Scope = "telemetry_agent.python";

    // Metrics
    public const string FunctionCalls = "python.profile.function.calls";
    public const string FunctionSelfTime = "python.profile.function.self_time";
    public const string FunctionTotalTime = "python.profile.function.total_time";
    public const string Exceptions = "python.profile.exceptions";
    public const string EventsReceived = "python.profile.events.received";
    public const string ShimEventsRecorded = "python.profile.shim.events.recorded";
    public const string ShimEventsSent = "python.profile.shim.events.sent";
    public const string ShimEventsDropped = "python.profile.shim.events.dropped";
    public const string ShimConnects = "python.profile.shim.connects";
    public const string ShimCallbackErrors = "python.profile.shim.callback_errors";
    public const string ShimOverhead = "python.profile.shim.overhead";
    public const string RecordingScale = "python.profile.recording.scale";
    public const string RecordingModeAttribute = "telemetry_agent.recording.mode";
    public const string RecordingScaleAttribute = "telemetry_agent.recording.scale";
    public const string RecordingCallbacksAttribute = "telemetry_agent.recording.callbacks";

    // Semantic-convention attributes
    public const string CodeFunctionName = "code.function.name";
    public const string CodeFilePath = "code.file.path";
    public const string CodeLineNumber = "code.line.number";
    public const string ExceptionType = "exception.type";
    public const string ExceptionMessage = "exception.message";
    public const string ExceptionStacktrace = "exception.stacktrace";
    public const string ThreadId = "thread.id";
    public const string ThreadName = "thread.name";

    /// <summary><c>code.function.name</c> of the series that sums every function beyond the cap.</summary>
    public const string OtherFunctions = "[other functions]";

    // Our attributes
    public const string ExceptionFate = "python.profile.exception.fate";
    public const string ExceptionFingerprint = "python.profile.exception.fingerprint";
    public const string ExceptionLibraryInternal = "python.profile.exception.library_internal";
    public const string MessageStatus = "python.profile.exception.message_status";
    public const string ExceptionNotes = "python.profile.exception.notes";
    public const string ExceptionNotesOmitted = "python.profile.exception.notes_omitted";
    public const string ExceptionSampleMessages = "python.profile.exception.sample_messages";
    public const string ExceptionCount = "python.profile.exception.count";
    public const string ExceptionCountTotal = "python.profile.exception.count_total";
    /// <summary>Followed by a fate: exceptions of the group with that fate in the interval.</summary>
    public const string ExceptionIntervalFatePrefix = "python.profile.exception.interval.";
    /// <summary>Followed by a fate: exceptions of the group with that fate since the process started.</summary>
    public const string ExceptionTotalFatePrefix = "python.profile.exception.total.";
    public const string ExceptionFirstSeen = "python.profile.exception.first_seen";
    public const string ExceptionLastSeen = "python.profile.exception.last_seen";
    public const string ExceptionChainRelation = "python.profile.exception.chain.relation";
    public const string ExceptionChainType = "python.profile.exception.chain.type";
    public const string ExceptionChainMessage = "python.profile.exception.chain.message";
    public const string ExceptionMembersPath = "python.profile.exception.members.path";
    public const string ExceptionMembersType = "python.profile.exception.members.type";
    public const string ExceptionMembersMessage = "python.profile.exception.members.message";
    public const string ExceptionMembersOmitted = "python.profile.exception.members_omitted";
    public const string ExceptionHandledAt = "python.profile.exception.handled_at";
}
