using System.Diagnostics;
using System.Runtime.InteropServices;
using TelemetryAgent.Transport;

namespace TelemetryAgent.Cli;

/// <summary>
/// The traced program started by `run`: inherits the terminal, gets SIGINT and SIGTERM forwarded, and its
/// exit status becomes the agent's.
/// </summary>
public sealed class ChildProgram : IDisposable
{
    private const int SigInt = 2, SigTerm = 15;
    private readonly Process _process;
    private readonly List<PosixSignalRegistration> _signals = [];

    private ChildProgram(Process process) => _process = process;

    public int Pid => _process.Id;

    public static ChildProgram Start(string executable, IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        var start = new ProcessStartInfo(executable) { UseShellExecute = false };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        foreach (var (name, value) in environment) start.Environment[name] = value;
        var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {executable}.");
        var child = new ChildProgram(process);
        child.ForwardSignals();
        return child;
    }

    private void ForwardSignals()
    {
        // Ctrl-C in a terminal already reaches the child (same process group): forwarding it again would
        // interrupt the program's own clean-up. Without a terminal, the agent is the only one who got it.
        var interactive = !Console.IsInputRedirected;
        _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
        {
            context.Cancel = true;
            if (!interactive) Forward(SigInt);
        }));
        _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            Forward(SigTerm);
        }));
    }

    private void Forward(int signal)
    {
        try
        {
            if (!_process.HasExited) Native.SendSignal(_process.Id, signal);
        }
        catch (InvalidOperationException) { }
    }

    /// <summary>Waits for the program and returns its exit status as a shell reports it (128+N for signal N).</summary>
    public async Task<int> WaitForExitAsync()
    {
        await _process.WaitForExitAsync().ConfigureAwait(false);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        foreach (var registration in _signals) registration.Dispose();
        _process.Dispose();
    }
}
