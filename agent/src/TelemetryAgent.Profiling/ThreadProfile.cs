namespace TelemetryAgent.Profiling;

/// <summary>A Python thread of one process and the call tree recorded on it.</summary>
public sealed class ThreadProfile
{
    internal ThreadProfile(uint id)
    {
        Id = id;
        Root = CallNode.CreateRoot($"thread {id}");
    }

    /// <summary>The shim's thread id (<c>ThreadDefinition.id</c>), unique within one connection.</summary>
    public uint Id { get; }
    /// <summary><c>threading.get_ident()</c>.</summary>
    public ulong Ident { get; internal set; }
    /// <summary>The OS thread id.</summary>
    public long NativeId { get; internal set; }
    /// <summary>The latest name the shim reported.</summary>
    public string Name { get; internal set; } = "";
    public bool IsMain { get; internal set; }

    /// <summary>
    /// The thread's call tree. The root has no function; its total is the sum of its children's. Its name is
    /// fixed by id while the thread may be renamed: outputs name threads with <c>ProfileLabels.Thread</c>.
    /// </summary>
    public CallNode Root { get; }

    /// <summary>Event records received for this thread.</summary>
    public long Events { get; internal set; }
    /// <summary>Monotonic time of the thread's first and last event; both 0 before any event.</summary>
    public long FirstTimestampNs { get; internal set; }
    public long LastTimestampNs { get; internal set; }

    /// <summary>An empty thread of the same identity (for a profile of a time range).</summary>
    internal ThreadProfile EmptyCopy() => new(Id) { Ident = Ident, NativeId = NativeId, Name = Name, IsMain = IsMain };

    internal ThreadProfile Copy()
    {
        var copy = new ThreadProfile(Id)
        {
            Ident = Ident, NativeId = NativeId, Name = Name, IsMain = IsMain,
            Events = Events, FirstTimestampNs = FirstTimestampNs, LastTimestampNs = LastTimestampNs,
        };
        copy.Root.MergeFrom(Root, function => function);
        return copy;
    }
}
