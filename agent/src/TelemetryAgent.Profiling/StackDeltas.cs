namespace TelemetryAgent.Profiling;

/// <summary>One call path of one thread and what it accumulated over some span of time.</summary>
/// <param name="Leaf">The path's last frame; its parents up to the thread's root are the rest of the stack.</param>
/// <param name="SelfNs">Time with <paramref name="Leaf"/> on top of the stack.</param>
/// <param name="Calls">Calls of the leaf's function at this path.</param>
public readonly record struct StackSample(ThreadProfile Thread, CallNode Leaf, long SelfNs, long Calls);

/// <summary>
/// Turns the cumulative profiles of one process (checkpoints, then the completed profile) into what each one
/// added since the previous: the samples of successive intervals add up to the process's totals, path by path.
/// </summary>
/// <remarks>
/// A path is a thread and the functions from its root, so that the copies of a tree that checkpoints make map onto
/// each other (they share the process's <see cref="FunctionInfo"/> objects, compared by reference: hashing their
/// strings at every node would dominate the cost). Not thread-safe: one caller.
/// </remarks>
public sealed class StackDeltas
{
    private readonly Dictionary<uint, int> _threadPaths = [];
    private readonly Dictionary<(int Parent, FunctionInfo Function), int> _paths = new(PathComparer.Instance);
    private long[] _previousSelf = new long[64];
    private long[] _previousCalls = new long[64];

    /// <summary>Every path with time or calls in <paramref name="profile"/>, unchanged (no previous profile).</summary>
    public static IReadOnlyList<StackSample> Totals(ProcessProfile profile) => new StackDeltas().Next(profile);

    /// <summary>
    /// The paths whose figures changed since the previous call, with the differences; threads in order, paths in
    /// the order of <see cref="CallTreeWalk"/>.
    /// </summary>
    public IReadOnlyList<StackSample> Next(ProcessProfile cumulative)
    {
        ArgumentNullException.ThrowIfNull(cumulative);
        var currentSelf = new Dictionary<int, long>();
        var currentCalls = new Dictionary<int, long>();
        var order = new List<(int Path, ThreadProfile Thread, CallNode Leaf)>();
        var pathAtDepth = new List<int>();

        foreach (var thread in cumulative.Threads)
        {
            if (!_threadPaths.TryGetValue(thread.Id, out var threadPath))
            {
                threadPath = NewPath();
                _threadPaths.Add(thread.Id, threadPath);
            }
            pathAtDepth.Clear();
            pathAtDepth.Add(threadPath);
            CallTreeWalk.Visit(thread.Root, (node, depth) =>
            {
                var key = (pathAtDepth[depth - 1], node.Function!);
                if (!_paths.TryGetValue(key, out var path))
                {
                    path = NewPath();
                    _paths.Add(key, path);
                }
                if (pathAtDepth.Count > depth) pathAtDepth[depth] = path;
                else pathAtDepth.Add(path);

                if (currentSelf.TryGetValue(path, out var self))
                {
                    currentSelf[path] = self + node.SelfNs;
                    currentCalls[path] += node.Calls;
                }
                else
                {
                    currentSelf.Add(path, node.SelfNs);
                    currentCalls.Add(path, node.Calls);
                    order.Add((path, thread, node));
                }
            });
        }

        var samples = new List<StackSample>();
        foreach (var (path, thread, leaf) in order)
        {
            var self = currentSelf[path];
            var calls = currentCalls[path];
            // Exact figures only grow. A burst-mode checkpoint is a scaled estimate that may shrink for a path
            // (the scale changes as windows come): that interval reports 0 for it, and the path reports again
            // once it grows past what was already reported, so nothing is negative or counted twice.
            var selfDelta = Math.Max(0, self - _previousSelf[path]);
            var callsDelta = Math.Max(0, calls - _previousCalls[path]);
            _previousSelf[path] += selfDelta;
            _previousCalls[path] += callsDelta;
            if (selfDelta != 0 || callsDelta != 0) samples.Add(new StackSample(thread, leaf, selfDelta, callsDelta));
        }
        return samples;
    }

    private int NewPath()
    {
        var path = _threadPaths.Count + _paths.Count;
        if (path >= _previousSelf.Length)
        {
            Array.Resize(ref _previousSelf, _previousSelf.Length * 2);
            Array.Resize(ref _previousCalls, _previousCalls.Length * 2);
        }
        return path;
    }

    private sealed class PathComparer : IEqualityComparer<(int Parent, FunctionInfo Function)>
    {
        public static readonly PathComparer Instance = new();

        public bool Equals((int Parent, FunctionInfo Function) x, (int Parent, FunctionInfo Function) y)
            => x.Parent == y.Parent && ReferenceEquals(x.Function, y.Function);

        public int GetHashCode((int Parent, FunctionInfo Function) path)
            => HashCode.Combine(path.Parent, System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(path.Function));
    }
}
