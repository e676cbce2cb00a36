using System.Net.Sockets;

namespace TelemetryAgent.Transport;

/// <summary>
/// Listens on a Unix stream socket and hands each accepted connection to a handler on its own task. The
/// accept loop survives any one connection's failure; the handler owns the socket it is given.
/// </summary>
public sealed class UnixSocketListener : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly Func<Socket, CancellationToken, Task> _handleConnection;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _connections = [];
    private readonly object _connectionsLock = new();
    private long _accepted;
    private volatile bool _closing;
    private ulong _socketInode;
    private Task? _acceptLoop;

    private UnixSocketListener(string path, Socket socket, Func<Socket, CancellationToken, Task> handleConnection)
    {
        Path = path;
        _socket = socket;
        _handleConnection = handleConnection;
    }

    public string Path { get; }

    /// <summary>How long disposal lets open connections end on their own before cancelling them.</summary>
    public static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(1);

    /// <summary>sun_path holds 108 bytes on Linux, the last one a NUL.</summary>
    public const int MaxPathBytes = 107;

    /// <summary>
    /// Binds <paramref name="path"/> with owner-only permissions, or owner and group read-write when
    /// <paramref name="socketGroup"/> is given. A socket file left by an agent that is gone is replaced; a live
    /// agent's socket, or a file that is not a socket, is never touched.
    /// </summary>
    public static UnixSocketListener Bind(string path, Func<Socket, CancellationToken, Task> handleConnection, int backlog = 512,
        uint? socketGroup = null)
    {
        var socket = BindListening(ref path, backlog, socketGroup);
        return Adopt(socket, path, handleConnection);
    }

    /// <summary>
    /// A listener on <paramref name="listening"/>, a socket <see cref="BindListening"/> bound at <paramref name="path"/>
    /// earlier: connections made meanwhile wait in its backlog until <see cref="Start"/>.
    /// </summary>
    public static UnixSocketListener Adopt(Socket listening, string path, Func<Socket, CancellationToken, Task> handleConnection)
    {
        var listener = new UnixSocketListener(path, listening, handleConnection);
        Native.TryGetInode(path, out listener._socketInode);
        return listener;
    }

    /// <summary>
    /// The listening socket another program bound at <paramref name="path"/> and handed down open as
    /// <paramref name="descriptor"/> (deploy/lambda/extension-launcher.c); anything else is refused.
    /// </summary>
    public static Socket InheritListening(int descriptor, string path)
    {
        Socket socket;
        try
        {
            socket = new Socket(new SafeSocketHandle(descriptor, ownsHandle: true));
        }
        catch (SocketException e)
        {
            throw new IOException($"descriptor {descriptor} is not an open socket ({e.Message})", e);
        }
        if (socket.AddressFamily == AddressFamily.Unix && socket.SocketType == SocketType.Stream
            && socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection) is int and not 0
            && socket.LocalEndPoint?.ToString() == path)
            return socket;
        socket.Dispose();
        throw new IOException($"descriptor {descriptor} is not a Unix stream socket listening at {path}");
    }

    /// <summary>
    /// A listening socket bound at <paramref name="path"/> (made absolute) under the rules of <see cref="Bind"/>: owner-only
    /// or owner and group, a stale socket replaced, anything else refused.
    /// </summary>
    public static Socket BindListening(ref string path, int backlog = 512, uint? socketGroup = null)
    {
        path = System.IO.Path.GetFullPath(path);
        if (System.Text.Encoding.UTF8.GetByteCount(path) > MaxPathBytes)
            throw new IOException($"The socket path {path} is longer than the {MaxPathBytes} bytes a Unix socket address holds; choose a shorter one.");
        RemoveStaleSocket(path);
        var directory = System.IO.Path.GetDirectoryName(path);
        if (!string.IsNullOrEmpty(directory)) CreateMissingFolders(directory, socketGroup);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            // Owner-only from the moment the file exists (the chmod after bind covers a kernel that ignores this); with a
            // socket group, the group's bits come once the group is set. (Binding under another name and moving the file
            // there would do it too, but the socket's address, which ss and /proc/net/unix show, would be that name.)
            Native.MakeOwnerOnlyBeforeBind((int)socket.Handle);
            socket.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            if (socketGroup is { } group)
            {
                if (!Native.SetGroup(path, group))
                    throw new IOException($"cannot give {path} to group {group}: {new System.ComponentModel.Win32Exception(System.Runtime.InteropServices.Marshal.GetLastPInvokeError()).Message}");
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
            }
            socket.Listen(backlog);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return socket;
    }

    /// <summary>Removes the socket file at <paramref name="path"/> if it is still the one with <paramref name="inode"/>.</summary>
    public static void RemoveIfUnchanged(string path, ulong inode)
    {
        // Only our own socket: a successor agent may have replaced the file since.
        if (Native.TryGetInode(path, out var current) && current == inode)
        {
            try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>
    /// Creates the folders of <paramref name="directory"/> that are missing, owner-only (0700) whatever the umask, so
    /// that no one else sees into a folder the agent made; with a socket group, 0750 and given to that group, which
    /// must reach the socket. Folders that exist are left as they are.
    /// </summary>
    private static void CreateMissingFolders(string directory, uint? socketGroup)
    {
        var missing = new Stack<string>();
        for (var folder = directory; !string.IsNullOrEmpty(folder) && !Directory.Exists(folder); folder = System.IO.Path.GetDirectoryName(folder))
            missing.Push(folder);
        var mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                   | (socketGroup is null ? 0 : UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        while (missing.TryPop(out var folder))
        {
            Directory.CreateDirectory(folder, mode);
            if (socketGroup is { } group && !Native.SetGroup(folder, group))
                throw new IOException($"cannot give {folder} to group {group}: {new System.ComponentModel.Win32Exception(System.Runtime.InteropServices.Marshal.GetLastPInvokeError()).Message}");
        }
    }

    private static void RemoveStaleSocket(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists && info.LinkTarget is null) return;
        if (info.LinkTarget is not null || !IsSocketFile(path))
            throw new IOException($"{path} exists and is not a socket; refusing to replace it.");
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable)
        {
            File.Delete(path); // Nobody listens: a previous agent died without cleaning up.
            return;
        }
        throw new IOException($"Another agent is already listening on {path}.");
    }

    private static bool IsSocketFile(string path)
    {
        // .NET has no file-type query for sockets; lstat's mode says it (S_IFSOCK = 0xC000).
        return Native.TryGetFileType(path, out var type) && type == Native.SocketFileType;
    }

    public void Start() => _acceptLoop ??= AcceptLoopAsync(_stopping.Token);

    private async Task AcceptLoopAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _socket.AcceptAsync(stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { break; }
            catch (ObjectDisposedException) { break; }
            catch (SocketException) when (_closing) { break; }
            catch (SocketException e) when (IsTransient(e.SocketErrorCode))
            {
                // Out of descriptors or an aborted handshake: pause and keep serving everyone else.
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
                continue;
            }
            var task = Task.Run(() => RunConnectionAsync(connection, stopping), CancellationToken.None);
            lock (_connectionsLock)
            {
                _connections.RemoveAll(t => t.IsCompleted);
                _connections.Add(task);
                _accepted++;
            }
        }
    }

    private static bool IsTransient(SocketError error) =>
        error is SocketError.ConnectionAborted or SocketError.ConnectionReset or SocketError.TooManyOpenSockets
            or SocketError.NoBufferSpaceAvailable or SocketError.Interrupted;

    private async Task RunConnectionAsync(Socket connection, CancellationToken stopping)
    {
        try
        {
            await _handleConnection(connection, stopping).ConfigureAwait(false);
        }
        catch
        {
            // The handler records why its connection ended; nothing may reach the accept loop.
        }
        finally
        {
            connection.Dispose();
        }
    }

    /// <summary>
    /// Waits until no connection has been open for <paramref name="quietPeriod"/> (so that a process that is
    /// still starting, such as a child the program spawned just before it exited, gets to connect and
    /// finish), or until <paramref name="timeout"/> passes. True when it ended quiet.
    /// </summary>
    public async Task<bool> WaitForConnectionsAsync(TimeSpan timeout, TimeSpan quietPeriod)
    {
        var elapsed = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            Task[] open;
            long acceptedBefore;
            lock (_connectionsLock)
            {
                open = _connections.Where(t => !t.IsCompleted).ToArray();
                acceptedBefore = _accepted;
            }
            var remaining = timeout - elapsed.Elapsed;
            if (open.Length > 0)
            {
                if (remaining <= TimeSpan.Zero) return false;
                await Task.WhenAny(Task.WhenAll(open), Task.Delay(remaining)).ConfigureAwait(false);
                continue;
            }
            var quiet = quietPeriod < remaining ? quietPeriod : remaining;
            if (quiet <= TimeSpan.Zero) return true;
            await Task.Delay(quiet).ConfigureAwait(false);
            lock (_connectionsLock)
            {
                if (_accepted == acceptedBefore) return true;
            }
        }
    }

    /// <summary>Completes when the accept loop ends: normally at disposal, with an exception if accepting failed.</summary>
    public Task Accepting => _acceptLoop ?? Task.CompletedTask;

    /// <summary>
    /// Stops accepting, gives open connections <see cref="DrainTimeout"/> to end on their own (a process
    /// that has exited has usually sent everything already, perhaps just accepted), then cancels the rest
    /// and waits for their handlers to finish.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        _closing = true;
        _socket.Dispose();
        if (_acceptLoop is not null)
        {
            try { await _acceptLoop.ConfigureAwait(false); }
            catch (SocketException) { } // already reported through Accepting
        }
        Task[] open;
        lock (_connectionsLock) open = [.. _connections];
        await Task.WhenAny(Task.WhenAll(open), Task.Delay(DrainTimeout)).ConfigureAwait(false);
        if (!_stopping.IsCancellationRequested) _stopping.Cancel();
        await Task.WhenAll(open).ConfigureAwait(false);
        RemoveIfUnchanged(Path, _socketInode);
        _stopping.Dispose();
    }
}
