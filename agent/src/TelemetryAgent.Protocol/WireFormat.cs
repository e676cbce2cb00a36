namespace TelemetryAgent.Protocol;

/// <summary>Constants of wire protocol version 1 (proto/PROTOCOL.md).</summary>
public static class WireFormat
{
    /// <summary>ASCII "TAPY" read as a little-endian u32.</summary>
    public const uint Magic = 0x59504154;
    public const ushort Version = 1;
    public const int PreambleSize = 8;
    public const int FrameHeaderSize = 5;
    public const int MaxFramePayload = 1 << 20;
    public const int EventRecordSize = 16;

    /// <summary>
    /// The most bytes one frame occupies on the wire, so the most a reader ever buffers unconsumed. A
    /// <c>Pipe</c> feeding the parser works with any pause threshold (back pressure follows what was
    /// examined), but one at or above this lets a maximal frame arrive without stop-and-go pauses.
    /// </summary>
    public const int MaxFrameSize = FrameHeaderSize + MaxFramePayload;

    /// <summary>Largest thread id a record can carry (24 bits).</summary>
    public const uint MaxThreadId = (1u << 24) - 1;
}

/// <summary>Frame types (the first byte of a frame header).</summary>
public enum FrameType : byte
{
    Hello = 1,
    Definitions = 2,
    Events = 3,
    Stats = 4,
    Goodbye = 5,
    Exceptions = 6,
}

/// <summary>Event kinds (the low 8 bits of a record's word).</summary>
public enum EventKind : byte
{
    Start = 1,
    Resume = 2,
    Throw = 3,
    Return = 4,
    Yield = 5,
    Unwind = 6,
    Seed = 7,
    /// <summary>Burst mode: a recording window opens (thread and code fields are 0).</summary>
    WindowStart = 8,
    /// <summary>Burst mode: the window closes; every thread's open frames close (thread and code fields are 0).</summary>
    WindowEnd = 9,
    /// <summary>
    /// Burst and exceptions mode: the call events are on for one of the ready-on function's first invocations
    /// (thread and code fields are 0).
    /// </summary>
    InvocationWindowStart = 10,
    /// <summary>The invocation's window closes; every thread's open frames close (thread and code fields are 0).</summary>
    InvocationWindowEnd = 11,
}
