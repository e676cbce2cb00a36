namespace TelemetryAgent.Profiling;

/// <summary>
/// One object per distinct function across the trees being merged, so that equal functions of different trees share
/// nodes. Every node of a function holds the same object: comparing by value (hashing its strings) once per object,
/// not once per node, is what keeps a large tree's merge fast.
/// </summary>
public sealed class CanonicalFunctions
{
    private readonly Dictionary<FunctionInfo, FunctionInfo> _byValue = [];
    private readonly Dictionary<FunctionInfo, FunctionInfo> _byReference = new(ReferenceEqualityComparer.Instance);

    /// <summary>The one object for <paramref name="function"/>'s value: the first seen.</summary>
    public FunctionInfo Of(FunctionInfo function)
    {
        if (_byReference.TryGetValue(function, out var known)) return known;
        if (!_byValue.TryGetValue(function, out known))
        {
            known = function;
            _byValue.Add(function, function);
        }
        _byReference.Add(function, known);
        return known;
    }
}
