namespace TelemetryAgent.Profiling.Formats;

/// <summary>
/// A define-once table of the profile formats (OTLP's dictionary tables, pprof's string table): each distinct key gets
/// the next index; index 0 is the zero value, so lookups of the zero value answer 0 without adding anything.
/// </summary>
public sealed class InternTable<TKey>(IEqualityComparer<TKey>? comparer = null) where TKey : notnull
{
    private readonly Dictionary<TKey, int> _indexes = new(comparer);

    /// <summary>Rows defined so far, the zero row included.</summary>
    public int Count => _indexes.Count + 1;

    /// <summary>The key's index; <paramref name="added"/> says whether the caller must append its row.</summary>
    public int IndexOf(TKey key, out bool added)
    {
        if (_indexes.TryGetValue(key, out var index))
        {
            added = false;
            return index;
        }
        index = _indexes.Count + 1;
        _indexes.Add(key, index);
        added = true;
        return index;
    }
}

/// <summary>Compares int arrays by content: stacks as lists of location indices.</summary>
public sealed class SequenceComparer : IEqualityComparer<int[]>
{
    public static readonly SequenceComparer Instance = new();

    public bool Equals(int[]? x, int[]? y) => x.AsSpan().SequenceEqual(y);

    public int GetHashCode(int[] values)
    {
        var hash = new HashCode();
        hash.AddBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return hash.ToHashCode();
    }
}

/// <summary>A string table whose entry 0 is <c>""</c> (both OTLP's and pprof's rule), filled as strings are used.</summary>
public sealed class StringTable
{
    private readonly IList<string> _strings;
    private readonly InternTable<string> _indexes = new(StringComparer.Ordinal);

    /// <param name="strings">The message's empty string table, which this fills.</param>
    public StringTable(IList<string> strings)
    {
        _strings = strings;
        _strings.Add("");
    }

    public int this[string value]
    {
        get
        {
            if (value.Length == 0) return 0;
            var index = _indexes.IndexOf(value, out var added);
            if (added) _strings.Add(value);
            return index;
        }
    }
}
