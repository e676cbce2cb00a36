using System.Text.RegularExpressions;

namespace TelemetryAgent.Profiling;

/// <summary>A Python function (code object) as the aggregates and the outputs name it.</summary>
/// <param name="DisplayFile">The file as shown to people: relative to the program's directory or to its
/// Python library, else as given.</param>
/// <param name="KindFlags">1 generator, 2 coroutine, 4 async generator; 0 a plain function.</param>
public sealed partial record FunctionInfo(
    string QualifiedName,
    string FileName,
    string DisplayFile,
    int FirstLine,
    string Module,
    uint KindFlags)
{
    /// <summary>The frame name used in every output: <c>qualname (file:line)</c>, as py-spy writes it.</summary>
    public string Label { get; init; } = $"{QualifiedName} ({DisplayFile}:{FirstLine})";

    /// <summary>A frame that is no Python function (e.g. the "[truncated]" node), labelled by its name alone.</summary>
    public static FunctionInfo Placeholder(string name) => new(name, "", "", 0, "", 0) { Label = name };

    public bool IsGeneratorOrCoroutine => KindFlags != 0;

    /// <summary>
    /// Code of the Python installation or of an installed package (see <see cref="IsLibraryFile"/>), as opposed
    /// to the program's own code. Exception fingerprints leave library frames out.
    /// </summary>
    public bool IsLibrary { get; init; }

    /// <summary>A function whose <see cref="DisplayFile"/> follows <see cref="ToDisplayFile"/>.</summary>
    public static FunctionInfo Create(
        string qualifiedName, string fileName, int firstLine, string module, uint kindFlags, string workingDirectory)
        => new(qualifiedName, fileName, ToDisplayFile(fileName, workingDirectory), firstLine, module, kindFlags)
        {
            IsLibrary = IsLibraryFile(fileName, workingDirectory),
        };

    /// <summary>
    /// Whether a code object's file belongs to Python or to an installed package rather than to the program: a
    /// frozen module (<c>&lt;frozen ...&gt;</c>), a file under a <c>lib/pythonX.Y</c> directory (the standard
    /// library, and site-packages of any environment), or under <c>site-packages</c> or <c>dist-packages</c>.
    /// Only the part below <paramref name="workingDirectory"/> is looked at when the file is under it, so that a
    /// program kept under some <c>lib/python3.12</c> is still the program while its own <c>.venv</c> is not.
    /// </summary>
    public static bool IsLibraryFile(string fileName, string workingDirectory)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        if (fileName.StartsWith("<frozen", StringComparison.Ordinal)) return true;
        if (fileName.Length == 0 || fileName[0] == '<') return false;

        var path = fileName;
        if (!string.IsNullOrEmpty(workingDirectory))
        {
            var directory = workingDirectory.TrimEnd('/');
            if (directory.Length > 0 && fileName.Length > directory.Length + 1
                && fileName.StartsWith(directory, StringComparison.Ordinal) && fileName[directory.Length] == '/')
            {
                path = fileName[directory.Length..];
            }
        }
        return PythonLibraryDirectory().IsMatch(path)
            || path.Contains("/site-packages/", StringComparison.Ordinal)
            || path.Contains("/dist-packages/", StringComparison.Ordinal);
    }

    /// <summary>
    /// How a code object's file is shown: relative to <paramref name="workingDirectory"/> when it is under it;
    /// else, for a file of a Python installation (<c>.../lib/pythonX.Y/...</c>: the standard library and
    /// site-packages), the part after that directory without a leading <c>site-packages/</c>; else as given
    /// (which keeps names such as <c>&lt;frozen os&gt;</c> and <c>&lt;string&gt;</c>). A working directory of
    /// <c>/</c> is ignored: every absolute path is under it, and the rule would only drop the leading slash.
    /// </summary>
    public static string ToDisplayFile(string fileName, string workingDirectory)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        if (fileName.Length == 0 || fileName[0] == '<') return fileName;

        if (!string.IsNullOrEmpty(workingDirectory))
        {
            var directory = workingDirectory.TrimEnd('/');
            if (directory.Length > 0
                && fileName.Length > directory.Length + 1
                && fileName.StartsWith(directory, StringComparison.Ordinal)
                && fileName[directory.Length] == '/')
            {
                return fileName[(directory.Length + 1)..];
            }
        }

        // The last match wins: a virtual environment may itself live under another Python's lib directory.
        var libraryMatch = PythonLibraryDirectory().Match(fileName);
        if (libraryMatch.Success)
        {
            var inLibrary = fileName[(libraryMatch.Index + libraryMatch.Length)..];
            const string sitePackages = "site-packages/";
            if (inLibrary.StartsWith(sitePackages, StringComparison.Ordinal)) inLibrary = inLibrary[sitePackages.Length..];
            if (inLibrary.Length > 0) return inLibrary;
        }
        return fileName;
    }

    // "/lib/python3.12/", also "/lib/python3.13t/" (free-threaded builds) and "/lib64/python3.12/".
    [GeneratedRegex(@"/lib(?:64)?/python\d+\.\d+t?/", RegexOptions.CultureInvariant | RegexOptions.RightToLeft)]
    private static partial Regex PythonLibraryDirectory();
}
