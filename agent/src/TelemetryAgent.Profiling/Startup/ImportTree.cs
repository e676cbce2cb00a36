namespace TelemetryAgent.Profiling.Startup;

/// <summary>
/// One import of a module that was not loaded yet (importlib's <c>_find_and_load</c>, the span <c>python -X importtime</c>
/// reports as cumulative). Times are on the shim's monotonic clock; find, load and exec are the import's own time, without
/// the imports nested in it, and add up to <see cref="SelfNs"/>.
/// </summary>
/// <param name="Parent">Index in the same tree of the import this one ran inside; -1 at the top.</param>
public sealed record ImportRecord(string Module, int Parent, long StartNs, long EndNs, long FindNs, long LoadNs, long ExecNs, bool Failed)
{
    public long CumulativeNs => Math.Max(0, EndNs - StartNs);
    public long SelfNs => FindNs + LoadNs + ExecNs;
}

/// <summary>Imports in the order they began, each with its children: the start-up's import tree, or a first invocation's.</summary>
public sealed class ImportTree
{
    private readonly int[][] _children;

    /// <param name="imports">In start order; a parent comes before its children (the session checks it).</param>
    public ImportTree(IReadOnlyList<ImportRecord> imports)
    {
        ArgumentNullException.ThrowIfNull(imports);
        Imports = imports;
        var children = new List<int>[imports.Count];
        var roots = new List<int>();
        for (var index = 0; index < imports.Count; index++)
        {
            var parent = imports[index].Parent;
            if (parent < 0 || parent >= index) roots.Add(index);
            else (children[parent] ??= []).Add(index);
        }
        _children = [.. children.Select(list => list?.ToArray() ?? [])];
        Roots = roots;
        TotalNs = roots.Sum(index => imports[index].CumulativeNs);
    }

    public static ImportTree Empty { get; } = new([]);

    public IReadOnlyList<ImportRecord> Imports { get; }

    /// <summary>Indexes of the imports made outside any other (the top level of <c>-X importtime</c>).</summary>
    public IReadOnlyList<int> Roots { get; }

    /// <summary>The time of the top-level imports together: what importing cost, nested imports included once.</summary>
    public long TotalNs { get; }

    public IReadOnlyList<int> Children(int index) => _children[index];

    /// <summary>The imports with the most self time, at most <paramref name="count"/>, ties by start order.</summary>
    public IReadOnlyList<ImportRecord> CostliestBySelfTime(int count)
        => [.. Imports.Select((record, index) => (record, index)).OrderByDescending(entry => entry.record.SelfNs)
            .ThenBy(entry => entry.index).Take(count).Select(entry => entry.record)];

    /// <summary>The module names of every import, each with its dotted path of parents (for flame graphs).</summary>
    public IEnumerable<(IReadOnlyList<string> Path, ImportRecord Import)> Paths()
    {
        var paths = new string[Imports.Count][];
        for (var index = 0; index < Imports.Count; index++)
        {
            var record = Imports[index];
            var parent = record.Parent >= 0 && record.Parent < index ? paths[record.Parent] : [];
            paths[index] = [.. parent, record.Module];
            yield return (paths[index], record);
        }
    }
}
