using System.CommandLine;
using System.Globalization;
using System.Text;
using Grpc.Core;
using TelemetryAgent.Live.Contracts;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Cli;

/// <summary>
/// `telemetry-agent top`: the hottest functions of one process, one service or all, refreshed every second, like
/// py-spy top: a live table on a terminal (keys sort and pick), plain lines when the output is not one.
/// </summary>
public static class TopCommand
{
    private static readonly Option<long?> Pid = new("--pid", "-p") { Description = "One process (its latest connection)." };
    private static readonly Option<string?> Service = new("--service", "-s") { Description = "Every process of one service." };

    private static readonly Option<string> Sort = new("--sort")
    {
        Description = "The order: self, total or calls in the last interval, or self-since-start, total-since-start, calls-since-start.",
        DefaultValueFactory = _ => "self",
    };

    private static readonly Option<int> Limit = new("--limit", "-n")
    {
        Description = "Rows shown (default: what fits the terminal; 20 in plain output).",
    };

    private static readonly Option<double> Interval = new("--interval")
    {
        Description = "Seconds between refreshes.",
        DefaultValueFactory = _ => 1.0,
    };

    private static readonly Option<int> Iterations = new("--iterations")
    {
        Description = "Stop after this many refreshes (default: until stopped).",
    };

    private static readonly Option<bool> Plain = new("--plain")
    {
        Description = "Plain lines, one table per refresh, even on a terminal (the default when the output is not a terminal).",
    };

    private static readonly string[] SortNames = ["self", "total", "calls", "self-since-start", "total-since-start", "calls-since-start"];

    public static Command Create()
    {
        var command = new Command("top", "The hottest functions of running processes, refreshed every second " +
                                         "(keys: s/t/c sort by self, total, calls; S/T/C since start; p/P pick a process or service; a all; q quit).")
        {
            Pid, Service, Sort, Limit, Interval, Iterations, Plain,
        };
        QueryClient.AddTo(command);
        Sort.AcceptOnlyFromAmong(SortNames);
        command.Validators.Add(result =>
        {
            if (result.GetValue(Pid) is not null && result.GetValue(Service) is not null) result.AddError("give --pid or --service, not both.");
        });
        Interval.Validators.Add(result =>
        {
            var seconds = result.GetValueOrDefault<double>();
            if (!double.IsFinite(seconds) || seconds < 0.2 || seconds > 3600) result.AddError("--interval takes seconds from 0.2 to 3600.");
        });
        command.SetAction((result, cancellation) => ExecuteAsync(result, cancellation));
        return command;
    }

    private sealed record Target(ProcessSelector Selector, string Label);

    private static async Task<int> ExecuteAsync(ParseResult result, CancellationToken cancellation)
    {
        if (QueryClient.Open(result, out var error) is not { } client)
        {
            Console.Error.WriteLine($"telemetry-agent top: {error}");
            return 2;
        }
        var plain = result.GetValue(Plain) || Console.IsOutputRedirected;
        var order = (TopOrder)(Array.IndexOf(SortNames, result.GetValue(Sort)) + 1);
        var target = result.GetValue(Pid) is { } pid ? new Target(new ProcessSelector { Pid = pid }, $"pid {pid}")
            : result.GetValue(Service) is { } service ? new Target(new ProcessSelector { Service = service }, $"service {service}")
            : new Target(new ProcessSelector { All = true }, "all processes");
        var iterations = result.GetValue(Iterations);
        var screen = plain ? null : new Screen();
        var shown = 0;
        try
        {
            while (true)
            {
                using var watch = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
                var request = new TopRequest
                {
                    Process = target.Selector, Order = order, IntervalMs = (int)(result.GetValue(Interval) * 1000),
                    Limit = result.GetValue(Limit) is > 0 and var limit ? limit : plain ? 20 : Math.Max(5, SafeHeight() - 5),
                };
                using var call = client.WatchTop(request, cancellationToken: watch.Token);
                var keys = screen?.NextKeyAsync(watch.Token);
                var updates = call.ResponseStream;
                var next = updates.MoveNext(watch.Token);
                while (true)
                {
                    Task done = keys is null ? next : await Task.WhenAny(next, keys).ConfigureAwait(false);
                    if (keys is not null && done == keys)
                    {
                        var key = await keys.ConfigureAwait(false);
                        if (key is 'q' or 'Q') return 0;
                        var changed = await ApplyKeyAsync(key, client, target, order, cancellation).ConfigureAwait(false);
                        if (changed is { } change)
                        {
                            (target, order) = change;
                            await watch.CancelAsync().ConfigureAwait(false);
                            break;
                        }
                        keys = screen!.NextKeyAsync(watch.Token);
                        continue;
                    }
                    if (!await next.ConfigureAwait(false)) return 0;
                    var text = Render(updates.Current, target, order, screen is null ? int.MaxValue : SafeWidth(), screen is not null);
                    if (screen is null)
                    {
                        Console.Out.Write(text);
                        Console.Out.Flush();
                    }
                    else screen.Draw(text);
                    if (iterations > 0 && ++shown >= iterations) return 0;
                    next = updates.MoveNext(watch.Token);
                }
            }
        }
        catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
        {
            screen?.Dispose();
            screen = null;
            Console.Error.WriteLine($"telemetry-agent top: {QueryClient.Explain(e, result)}");
            return QueryClient.IsUnreachable(e) ? StatusCommand.ExitCodes.Unreachable : 1;
        }
        catch (Exception e) when (e is OperationCanceledException || e is RpcException { StatusCode: StatusCode.Cancelled })
        {
            return 0;
        }
        finally
        {
            screen?.Dispose();
        }
    }

    /// <summary>The new target and order a key asks for; null when it changes neither.</summary>
    private static async Task<(Target, TopOrder)?> ApplyKeyAsync(char key, Query.QueryClient client, Target target, TopOrder order, CancellationToken cancellation)
    {
        switch (key)
        {
            case 's': return (target, TopOrder.Self);
            case 't': return (target, TopOrder.Total);
            case 'c': return (target, TopOrder.Calls);
            case 'S': return (target, TopOrder.SelfSinceStart);
            case 'T': return (target, TopOrder.TotalSinceStart);
            case 'C': return (target, TopOrder.CallsSinceStart);
            case 'a': return (new Target(new ProcessSelector { All = true }, "all processes"), order);
            case 'p':
            case 'P':
                var list = await client.ListProcessesAsync(new ListProcessesRequest(), cancellationToken: cancellation);
                var running = list.Processes.Where(process => process.Running).ToArray();
                var targets = new List<Target> { new(new ProcessSelector { All = true }, "all processes") };
                targets.AddRange(running.Select(process => process.ServiceName).Distinct()
                    .Select(service => new Target(new ProcessSelector { Service = service }, $"service {service}")));
                targets.AddRange(running.Select(process => new Target(new ProcessSelector { Pid = process.Pid }, $"pid {process.Pid} ({process.ServiceName})")));
                var index = targets.FindIndex(candidate => candidate.Selector.Equals(target.Selector));
                var step = key == 'p' ? 1 : -1;
                return (targets[((index < 0 ? 0 : index) + step + targets.Count) % targets.Count], order);
            default:
                return null;
        }
    }

    private static string Render(TopUpdate update, Target target, TopOrder order, int width, bool interactive)
    {
        var inv = CultureInfo.InvariantCulture;
        var text = new StringBuilder();
        var at = DateTimeOffset.UnixEpoch.AddTicks(update.UnixNs / 100).ToLocalTime();
        text.Append(inv, $"telemetry-agent top · {target.Label} · {update.Processes} running · {update.Functions:N0} functions · ");
        text.Append(inv, $"sorted by {SortNames[Math.Max(0, (int)order - 1)]} · interval {update.IntervalSeconds:0.00} s · {at:HH:mm:ss}\n");
        if (interactive) text.Append("keys: s/t/c sort by self/total/calls, S/T/C since start, p/P pick process or service, a all, q quit\n");
        text.Append("  %Self  %Total      Self     Total   Calls/s        Calls  Function (file:line)\n");
        var intervalNs = Math.Max(1, update.IntervalSeconds * 1e9);
        foreach (var row in update.Rows)
        {
            var line = string.Create(inv,
                $"{100 * row.SelfNs / intervalNs,6:0.0}% {100 * row.TotalNs / intervalNs,6:0.0}% {TimeFormat.Nanoseconds(row.SelfNsSinceStart),9} " +
                $"{TimeFormat.Nanoseconds(row.TotalNsSinceStart),9} {row.Calls / update.IntervalSeconds,9:N0} {row.CallsSinceStart,12:N0}  " +
                $"{row.QualifiedName} ({row.File}:{row.Line})");
            text.Append(line.Length > width ? line[..Math.Max(0, width - 1)] : line).Append('\n');
        }
        if (update.Rows.Count == 0) text.Append("  (no function ran: the processes are idle, or none is running)\n");
        if (!interactive) text.Append('\n');
        return text.ToString();
    }

    private static int SafeHeight()
    {
        try { return Console.WindowHeight; } catch (IOException) { return 24; }
    }

    private static int SafeWidth()
    {
        try { return Console.WindowWidth; } catch (IOException) { return 120; }
    }

    /// <summary>The terminal while top runs: the alternate screen, no cursor, keys read one at a time; put back on dispose.</summary>
    private sealed class Screen : IDisposable
    {
        private Task<char>? _pending;

        public Screen()
        {
            Console.Out.Write("\u001b[?1049h\u001b[?25l");
            Console.Out.Flush();
        }

        public void Draw(string text)
        {
            Console.Out.Write("\u001b[H\u001b[2J" + text.Replace("\n", "\u001b[K\r\n", StringComparison.Ordinal));
            Console.Out.Flush();
        }

        /// <summary>The next key pressed (one reader at a time: a read still pending is handed on, not lost).</summary>
        public Task<char> NextKeyAsync(CancellationToken cancellation)
        {
            if (Console.IsInputRedirected) return Task.Delay(Timeout.Infinite, cancellation).ContinueWith(_ => '\0', TaskScheduler.Default);
            if (_pending is null || _pending.IsCompleted && _pending.Result != '\0') _pending = Task.Run(() => Console.ReadKey(intercept: true).KeyChar, CancellationToken.None);
            return _pending.WaitAsync(cancellation);
        }

        public void Dispose()
        {
            Console.Out.Write("\u001b[?25h\u001b[?1049l");
            Console.Out.Flush();
        }
    }
}
