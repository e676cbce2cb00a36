using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Output;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>One output folder per process, as `serve` writes them, and a running process's folder from a checkpoint.</summary>
public sealed class ProcessFoldersTests : IDisposable
{
    private readonly TemporaryFolder _root = new();
    private readonly FakeTimeProvider _time = new(SampleRun.Start);

    public void Dispose() => _root.Dispose();

    private sealed class Checkpoints : IProcessObserver
    {
        public ProcessProfile? Latest { get; private set; }
        public void OnStarted(ProcessProfile running) { }
        public void OnCheckpoint(ProcessProfile checkpoint) => Latest = checkpoint;
        public void OnCompleted(ProcessProfile completed) { }
    }

    [Fact]
    public void A_completed_process_gets_its_own_complete_folder_and_nothing_is_left_staged()
    {
        var log = new StringWriter();
        var folders = new ProcessFolders(FolderExporter.Standard(), _root.Path, log, _time);
        var profile = new SessionScript(time: _time, serviceName: "checkout api").Thread(1, "MainThread", isMain: true)
            .Code(1, "main").Start(1_000, 1).Return(2_000, 1).Complete();

        folders.OnCompleted(profile);

        var folder = Assert.Single(Directory.GetDirectories(_root.Path));
        Assert.Equal("checkout_api-4242-20250314-092653-1", Path.GetFileName(folder));
        Assert.Equal(FolderExporter.StandardFiles().Select(file => file.Name).Order(), Directory.GetFiles(folder).Select(Path.GetFileName).Order());
        Assert.Equal($"telemetry-agent: wrote {folder}/\n", log.ToString().ReplaceLineEndings("\n"));
    }

    [Fact]
    public void A_running_process_gets_a_folder_of_its_checkpoint()
    {
        var checkpoints = new Checkpoints();
        var script = new SessionScript(time: _time, observer: checkpoints).Thread(1, "MainThread", isMain: true)
            .Code(1, "main").Code(2, "work").Start(1_000, 1).Start(1_500, 2).Return(2_000, 2);
        _time.Advance(TimeSpan.FromSeconds(3));
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();

        var report = new ProcessFolders(FolderExporter.Standard(), _root.Path, TextWriter.Null, _time).Write(checkpoints.Latest!);

        Assert.True(report.AllSucceeded, string.Join("; ", report.Files.Select(file => $"{file.Name}: {file.Error}")));
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(report.Folder, SummaryJsonFile.FileName)));
        var process = Assert.Single(summary.RootElement.GetProperty("processes").EnumerateArray());
        Assert.Equal(JsonValueKind.Null, process.GetProperty("connection").GetProperty("end_reason").ValueKind);
        Assert.Equal(0, summary.RootElement.GetProperty("totals").GetProperty("running_processes_left_out").GetInt32());
        // The calls so far, main's still open.
        Assert.Equal(
            "app (pid 4242);thread MainThread;main (app.py:1) 1\n" +
            "app (pid 4242);thread MainThread;main (app.py:1);work (app.py:1) 1\n",
            File.ReadAllText(Path.Combine(report.Folder, FoldedStacksFile.CallsFolded)));
    }
}
