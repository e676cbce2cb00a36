using System.Collections;

namespace TelemetryAgent.OtlpReceiver;

/// <summary>One decoded export request as the receiver accepted it.</summary>
/// <param name="Message">The decoded Export*ServiceRequest.</param>
/// <param name="Transport">HTTP or gRPC.</param>
/// <param name="Compressed">True when the body (HTTP) or message (gRPC) was gzip-compressed.</param>
/// <param name="WireBytes">Size of the body or message as received, before decompression.</param>
/// <param name="ReceivedAt">When the request was accepted.</param>
public sealed record ReceivedRequest<T>(T Message, OtlpTransport Transport, bool Compressed, int WireBytes, DateTimeOffset ReceivedAt)
{
    /// <summary>The request's headers (gRPC: its metadata), names in lower case, repeated values joined by commas.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();
}

/// <summary>
/// The accepted requests of one signal, in arrival order. Thread-safe: enumeration and indexing see a
/// snapshot, and waiters are woken on every append.
/// </summary>
public sealed class RequestLog<T> : IReadOnlyList<ReceivedRequest<T>>
{
    private readonly Lock _gate = new();
    private readonly List<ReceivedRequest<T>> _items = [];
    private TaskCompletionSource _changed = NewSignal();

    internal RequestLog(OtlpSignal signal) => Signal = signal;

    public OtlpSignal Signal { get; }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _items.Count;
            }
        }
    }

    public ReceivedRequest<T> this[int index]
    {
        get
        {
            lock (_gate)
            {
                return _items[index];
            }
        }
    }

    /// <summary>A copy of the requests received so far.</summary>
    public IReadOnlyList<ReceivedRequest<T>> Snapshot()
    {
        lock (_gate)
        {
            return _items.ToArray();
        }
    }

    public IEnumerator<ReceivedRequest<T>> GetEnumerator() => ((IEnumerable<ReceivedRequest<T>>)Snapshot()).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Waits until at least <paramref name="count"/> requests have arrived; returns them all.</summary>
    /// <exception cref="TimeoutException">Fewer arrived within <paramref name="timeout"/>.</exception>
    public Task<IReadOnlyList<ReceivedRequest<T>>> WaitForAsync(int count, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        WaitForAsync(static _ => true, count, timeout, cancellationToken);

    /// <summary>
    /// Waits until at least <paramref name="count"/> requests satisfy <paramref name="match"/>; returns those requests.
    /// </summary>
    /// <exception cref="TimeoutException">Fewer matched within <paramref name="timeout"/>.</exception>
    public async Task<IReadOnlyList<ReceivedRequest<T>>> WaitForAsync(
        Func<ReceivedRequest<T>, bool> match, int count, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(match);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        while (true)
        {
            Task changed;
            ReceivedRequest<T>[] seen;
            lock (_gate)
            {
                seen = _items.ToArray();
                changed = _changed.Task;
            }
            var matching = seen.Where(match).ToArray();
            if (matching.Length >= count)
            {
                return matching;
            }
            try
            {
                await changed.WaitAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException(
                    $"Waited {timeout.TotalSeconds:0.###} s for {count} matching {Signal} request(s); " +
                    $"{matching.Length} of {seen.Length} received matched.");
            }
        }
    }

    internal void Add(ReceivedRequest<T> request)
    {
        TaskCompletionSource woken;
        lock (_gate)
        {
            _items.Add(request);
            woken = _changed;
            _changed = NewSignal();
        }
        woken.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
