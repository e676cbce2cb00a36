namespace TelemetryAgent.Aggregation;

/// <summary>A Python function (code object) as the aggregates and the outputs name it.</summary>
/// <param name="DisplayFile">The file as shown to people: relative to the program's directory or to its
/// Python library, else as given.</param>
/// <param name="KindFlags">1 generator, 2 coroutine, 4 async generator; 0 a plain function.</param>
public sealed record FunctionInfo(
    string QualifiedName,
    string FileName,
    string DisplayFile,
    int FirstLine,
    string Module,
    uint KindFlags)
{
    /// <summary>The frame name used in every output: <c>qualname (file:line)</c>, as py-spy writes it.</summary>
    public string Label { get; } = $"{QualifiedName} ({DisplayFile}:{FirstLine})";

    public bool IsGeneratorOrCoroutine => KindFlags != 0;
}
