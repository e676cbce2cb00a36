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
        // Handlers first: a signal between the start and their registration would kill the agent and
        // orphan the program. Until the program exists, a signal is held and passed on once it does.
        var pending = new ChildProgram[1];
        var held = 0;
        var registrations = new List<PosixSignalRegistration>
        {
            PosixSignalRegistration.Create(PosixSignal.SIGINT, context => OnSignal(context, SigInt)),
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => OnSignal(context, SigTerm)),
        };
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {executable}.");
        }
        catch
        {
            foreach (var registration in registrations) registration.Dispose();
            throw;
        }
        var child = new ChildProgram(process);
        child._signals.AddRange(registrations);
        lock (pending)
        {
            pending[0] = child;
            if (held != 0) child.Forward(held);
        }
        return child;

        void OnSignal(PosixSignalContext context, int signal)
        {
            context.Cancel = true;
            // Ctrl-C in a terminal reaches the whole foreground process group, the program included:
            // forwarding it again would interrupt the program's own clean-up.
            if (signal == SigInt && Native.IsInForegroundOfTerminal()) return;
            lock (pending)
            {
                if (pending[0] is { } started) started.Forward(signal);
                else held = signal;
            }
        }
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
