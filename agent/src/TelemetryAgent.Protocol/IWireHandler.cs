using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Protocol;

/// <summary>
/// Receives what the parser decodes from one connection, in stream order. Implemented by a session;
/// use a struct implementation as the generic argument so the JIT calls it directly.
/// </summary>
public interface IWireHandler
{
    void OnHello(Hello hello);
    void OnDefinitions(Definitions definitions);

    /// <summary>
    /// Whole 16-byte records (length is a positive multiple of <see cref="WireFormat.EventRecordSize"/>).
    /// The span is only valid during the call: decode, never keep it.
    /// </summary>
    void OnEvents(ReadOnlySpan<byte> packedRecords);

    void OnStats(Stats stats);
    void OnGoodbye(Goodbye goodbye);

    /// <summary>Exceptions whose fate is known, and tallies of those sent without detail.</summary>
    void OnExceptions(Exceptions exceptions);
}
