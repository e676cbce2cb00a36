using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>`telemetry-agent run` as a user meets it: exit codes, errors, module form, child processes.</summary>
public sealed class RunCommandTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();


    [Theory]
    [InlineData("import sys\nsys.exit(3)\n", 3)]
    [InlineData("raise RuntimeError('boom')\n", 1)]
    [InlineData("print('fine')\n", 0)]
    public async Task ForwardsTheProgramsExitCode(string source, int expected)
    {
        var result = await Processes.RunAgentAsync(["run", "-o", _temp.File("out"), _temp.Write("exit.py", source)]);
        Assert.True(result.ExitCode == expected, result.ToString());
        if (expected == 1) Assert.Contains("RuntimeError: boom", result.Stderr);
        Assert.True(File.Exists(_temp.File("out/summary.json")), result.ToString());
    }

    [Fact]
    public async Task ProgramArgumentsThatLookLikeOptionsBelongToTheProgram()
    {
        var script = _temp.Write("args.py", "import sys\nprint(sys.argv[1:])\n");
        var result = await Processes.RunAgentAsync(["run", "-o", _temp.File("out"), script, "--top", "-o", "x", "--help"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("['--top', '-o', 'x', '--help']\n", result.Stdout);
    }

    [Fact]
    public async Task RunsAModuleWithAnInterpreterNamedBeforeIt()
    {
        var package = Directory.CreateDirectory(_temp.File("pkgroot/demo_pkg")).FullName;
        File.WriteAllText(Path.Combine(package, "__init__.py"), "");
        File.WriteAllText(Path.Combine(package, "__main__.py"),
            "import sys\ndef square(x):\n    return x * x\nprint(sum(square(i) for i in range(10)), sys.argv[1:])\n");
        var result = await Processes.RunAgentAsync(
            ["run", "-o", _temp.File("out"), "--", Processes.Python.Path, "-m", "demo_pkg", "a1"],
            workingDirectory: _temp.File("pkgroot"));
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("285 ['a1']\n", result.Stdout);
        using var summary = JsonDocument.Parse(File.ReadAllText(_temp.File("out/summary.json")));
        var square = summary.RootElement.GetProperty("functions").EnumerateArray()
            .Single(f => f.GetProperty("qualified_name").GetString() == "square");
        Assert.Equal(10, square.GetProperty("calls").GetInt64());
        Assert.Equal("demo_pkg", summary.RootElement.GetProperty("processes")[0].GetProperty("service_name").GetString());
    }

    [Fact]
    public async Task SaysClearlyWhenTheNamedPythonCannotBeUsed()
    {
        var missing = await Processes.RunAgentAsync(["run", "--python", "/nonexistent/python3.12", _temp.Write("a.py", "")]);
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("/nonexistent/python3.12", missing.Stderr);
        Assert.Contains("not a Python interpreter", missing.Stderr);

        // An interpreter older than 3.12 (any other executable that answers a version would do as well).
        var old = _temp.Write("python-old", "#!/bin/sh\necho 3.11.7\n");
        File.SetUnixFileMode(old, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var tooOld = await Processes.RunAgentAsync(["run", _temp.Write("b.py", "")],
            environment: new Dictionary<string, string?> { ["TELEMETRY_PYTHON"] = old });
        Assert.Equal(2, tooOld.ExitCode);
        Assert.Contains("needs Python 3.12 or later", tooOld.Stderr);
    }

    [Fact]
    public async Task AnInterpreterNamedBeforeTheProgramIsBlamedAsSuch()
    {
        var old = _temp.Write("python3.11", "#!/bin/sh\necho 3.11.7\n");
        File.SetUnixFileMode(old, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var result = await Processes.RunAgentAsync(["run", "--", old, _temp.Write("d.py", "")]);
        Assert.Equal(2, result.ExitCode);
        Assert.Equal($"telemetry-agent run: {old}, named before the program, is Python 3.11.7, but sys.monitoring needs Python 3.12 or later.\n",
            result.Stderr);
    }

    [Fact]
    public async Task AProgramThatCannotStartGetsItsOwnErrorItsExitCodeAndNoOutputFolder()
    {
        var result = await Processes.RunAgentAsync(["run", _temp.File("nonexistent.py")], workingDirectory: _temp.Path);
        // Python's own error and exit code; no summary of nothing, no hint that the shim failed, no empty folder.
        Assert.True(result.ExitCode == 2, result.ToString());
        var lines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 2, result.ToString());
        Assert.EndsWith($": can't open file '{_temp.File("nonexistent.py")}': [Errno 2] No such file or directory", lines[0]);
        Assert.Equal("telemetry-agent: the program exited with status 2 before the shim reported a process; no outputs written.", lines[1]);
        Assert.False(Directory.Exists(_temp.File("telemetry-out")), result.ToString());
    }

    [Fact]
    public async Task TwoRunsInTheSameSecondGetFoldersOfTheirOwn()
    {
        // Another run has taken this second, and each of the next ones this run could start in: it must take
        // <time>-2, never share a folder.
        var root = Directory.CreateDirectory(_temp.File("telemetry-out")).FullName;
        var now = DateTime.Now;
        var taken = Enumerable.Range(0, 120).Select(s => Path.Combine(root, now.AddSeconds(s).ToString("yyyyMMdd-HHmmss"))).ToArray();
        foreach (var other in taken) Directory.CreateDirectory(other);

        var result = await Processes.RunAgentAsync(["run", _temp.Write("e.py", "print('fine')\n")], workingDirectory: _temp.Path);
        Assert.True(result.ExitCode == 0, result.ToString());
        var written = Directory.GetDirectories(root).Except(taken).ToArray();
        var folder = Assert.Single(written);
        Assert.Contains(Path.GetFileName(folder), taken.Select(t => Path.GetFileName(t) + "-2"));
        Assert.True(File.Exists(Path.Combine(folder, "summary.json")), result.ToString());
        Assert.All(taken, t => Assert.Empty(Directory.EnumerateFileSystemEntries(t)));
    }

    [Fact]
    public async Task FindsNoPythonAndSaysWhatItTried()
    {
        // An empty PATH and an empty pyenv root: nothing to find.
        var result = await Processes.RunAsync("/usr/bin/env",
            ["-i", $"HOME={_temp.Path}", $"PYENV_ROOT={_temp.File("no-pyenv")}", "PATH=/nonexistent",
             Processes.DotnetHost, Processes.AgentDll, "run", _temp.Write("c.py", "")]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("No Python 3.12 or later was found", result.Stderr);
        Assert.Contains("--python", result.Stderr);
    }

    [Fact]
    public async Task TracesChildProcessesAsTheirOwnProcesses()
    {
        var script = _temp.Write("parent.py", """
            import multiprocessing, subprocess, sys

            def child_work(n):
                return sum(i * i for i in range(n))

            if __name__ == "__main__":
                subprocess.run([sys.executable, "-c", "print('from subprocess')"], check=True)
                ctx = multiprocessing.get_context("spawn")
                pool = ctx.Pool(1)
                print(pool.apply(child_work, (100,)))
                # close + join lets the worker exit on its own; `with Pool()` would SIGTERM it, and a killed
                # process loses what its shim had not sent yet.
                pool.close()
                pool.join()
            """);
        var result = await Processes.RunAgentAsync(["run", "-o", _temp.File("out"), script]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("from subprocess\n328350\n", result.Stdout);
        using var summary = JsonDocument.Parse(File.ReadAllText(_temp.File("out/summary.json")));
        var processes = summary.RootElement.GetProperty("processes").EnumerateArray().ToArray();
        var parent = processes.Single(p => p.GetProperty("argv")[0].GetString()!.EndsWith("parent.py", StringComparison.Ordinal));
        var parentPid = parent.GetProperty("pid").GetInt64();
        // The subprocess and the spawned pool worker each report on their own (so may spawn's resource tracker).
        var children = processes.Where(p => p.GetProperty("parent_pid").GetInt64() == parentPid)
            .Select(p => string.Join(' ', p.GetProperty("argv").EnumerateArray().Select(a => a.GetString())))
            .ToArray();
        Assert.Contains(children, argv => argv == "-c");
        Assert.Contains(children, argv => argv.Contains("--multiprocessing-fork", StringComparison.Ordinal));
        Assert.All(processes, p => Assert.NotEqual("ProtocolError", p.GetProperty("connection").GetProperty("end_reason").GetString()));
        var folded = File.ReadAllText(_temp.File("out/calls.folded"));
        Assert.Contains("child_work (", folded);
    }

    [Fact]
    public async Task WaitsForAChildThatConnectsAfterTheProgramExited()
    {
        var script = _temp.Write("launcher.py", """
            import subprocess, sys
            subprocess.Popen([sys.executable, "-c", "import time\ndef late():\n    time.sleep(0.3)\nlate()"])
            """);
        // Each shim says goodbye at exit if its sender finishes within the exit timeout (2 s by default, which a
        // loaded machine can exceed): a longer one, so that both goodbyes arrive however slow the machine.
        var result = await Processes.RunAgentAsync(["run", "-o", _temp.File("out"), script],
            environment: new Dictionary<string, string?> { ["TELEMETRY_SHIM_EXIT_TIMEOUT_S"] = "60" });
        Assert.True(result.ExitCode == 0, result.ToString());
        using var summary = JsonDocument.Parse(File.ReadAllText(_temp.File("out/summary.json")));
        var processes = summary.RootElement.GetProperty("processes").EnumerateArray().ToArray();
        Assert.Equal(2, processes.Length);
        Assert.All(processes, p => Assert.Equal("Goodbye", p.GetProperty("connection").GetProperty("end_reason").GetString()));
        Assert.Contains("late (", File.ReadAllText(_temp.File("out/calls.folded")));
    }

    [Theory]
    [InlineData("--top", "-1")]
    [InlineData("--summary-functions", "-5")]
    [InlineData("--child-grace", "NaN")]
    public async Task RejectsBadOptionValuesBeforeTheProgramRuns(string option, string value)
    {
        var marker = _temp.File("ran");
        var script = _temp.Write("marker.py", $"open({JsonSerializer.Serialize(marker)}, 'w').close()\n");
        var result = await Processes.RunAgentAsync(["run", option, value, script]);
        Assert.True(result.ExitCode != 0, result.ToString());
        Assert.Contains(option, result.Stderr);
        Assert.DoesNotContain("Unhandled exception", result.Stderr);
        Assert.False(File.Exists(marker), "the program ran despite the bad option");
    }

    /// <summary>
    /// `run` passes SIGTERM on and exits with its program's status, however long the program's clean-up takes: it is not
    /// ended 2 s after the signal with 143 (System.CommandLine's termination timeout, which `run` turns off). The agent
    /// starts with SIGINT and SIGTERM at their default dispositions, as under a terminal or a service manager: a test
    /// host's children would otherwise inherit what it ignores. The delays are when the signal comes, the test's input.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(500)]
    [InlineData(1000)]
    [InlineData(2000)]
    public async Task SigtermAtAnyMomentEndsRunWithTheProgramsStatus(int afterMs)
    {
        var started = _temp.File("started");
        var handling = _temp.File("handling");
        var done = _temp.File("done");
        string Quoted(string path) => JsonSerializer.Serialize(path);
        var script = _temp.Write("term.py", $"""
            import os, signal, sys, time

            def on_term(signum, frame):
                open({Quoted(handling)}, "w").close()
                time.sleep(3)  # a clean-up longer than the 2 s after which System.CommandLine would end the agent
                open({Quoted(done)}, "w").close()
                sys.exit(7)

            signal.signal(signal.SIGTERM, on_term)
            with open({Quoted(started)}, "w") as marker:
                marker.write(str(os.getpid()))
            while True:
                time.sleep(0.05)

            """);
        using var run = Processes.Start("env", ["--default-signal=INT,TERM", "dotnet", Processes.AgentDll, "run", "-o", _temp.File("out"), script]);
        run.StandardInput.Close();
        var program = 0;
        try
        {
            await Task.Delay(afterMs);
            Assert.True(Transport.Native.SendSignal(run.Id, 15));
            var result = await Processes.WaitAsync(run, TimeSpan.FromSeconds(60));
            if (File.Exists(started)) program = int.Parse(File.ReadAllText(started));
            // Its handler ran to the end (7), or the signal came before there was one: the agent or the program ended by
            // it, which a shell reports as 128 + 15.
            var expected = File.Exists(done) ? 7 : 143;
            Assert.True(result.ExitCode == expected, $"SIGTERM after {afterMs} ms: {result}");
            Assert.False(File.Exists(handling) && !File.Exists(done), "run ended while its program was still cleaning up");
            Assert.False(program != 0 && Directory.Exists($"/proc/{program}") && !IsZombie(program), "the program outlived run");
        }
        finally
        {
            if (!run.HasExited) run.Kill(entireProcessTree: true);
            if (program != 0 && Directory.Exists($"/proc/{program}")) Transport.Native.SendSignal(program, 9);
        }
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z');
        }
        catch (IOException)
        {
            return true; // gone while we looked
        }
    }

    [Fact]
    public async Task ATemporaryFolderTooLongForASocketStillWorks()
    {
        var longTmp = Directory.CreateDirectory(Path.Combine(_temp.Path, new string('t', 100))).FullName;
        var result = await Processes.RunAgentAsync(["run", "-o", _temp.File("out"), _temp.Write("ok.py", "print('ok')\n")],
            environment: new Dictionary<string, string?> { ["TMPDIR"] = longTmp });
        Assert.True(result.ExitCode == 0 && result.Stdout == "ok\n", result.ToString());
    }
}
