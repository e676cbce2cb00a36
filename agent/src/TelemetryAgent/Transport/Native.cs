using System.Runtime.InteropServices;

namespace TelemetryAgent.Transport;

/// <summary>The few libc calls .NET does not wrap.</summary>
public static class Native
{
    public const uint SocketFileType = 0xC000; // S_IFSOCK
    private const uint FileTypeMask = 0xF000;  // S_IFMT

    /// <summary>The file type bits of the path itself (not a link's target).</summary>
    public static bool TryGetFileType(string path, out uint fileType)
    {
        if (!TryStatx(path, out var buffer))
        {
            fileType = 0;
            return false;
        }
        fileType = BitConverter.ToUInt16(buffer, 28) & FileTypeMask;
        return true;
    }

    /// <summary>The inode number of the path itself (not a link's target).</summary>
    public static bool TryGetInode(string path, out ulong inode)
    {
        inode = TryStatx(path, out var buffer) ? BitConverter.ToUInt64(buffer, 32) : 0;
        return inode != 0;
    }

    private static bool TryStatx(string path, out byte[] buffer)
    {
        buffer = new byte[256];
        const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100, StatxTypeAndInode = 0x1 | 0x100;
        return statx(AtFdCwd, path, AtSymlinkNoFollow, StatxTypeAndInode, buffer) == 0;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string pathname, int flags, uint mask, byte[] statxbuf);

    /// <summary>
    /// Creates a directory that did not exist (mkdir(2), mode 0777 less the umask): false when the path exists already,
    /// so that of two processes asking for the same path only one gets it.
    /// </summary>
    public static bool TryCreateDirectory(string path)
    {
        const int AlreadyExists = 17; // EEXIST
        if (mkdir(path, 0b111_111_111) == 0) return true;
        var errno = Marshal.GetLastPInvokeError();
        if (errno == AlreadyExists) return false;
        throw new IOException($"cannot create {path}: {new System.ComponentModel.Win32Exception(errno).Message}");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int mkdir([MarshalAs(UnmanagedType.LPUTF8Str)] string pathname, uint mode);

    /// <summary>
    /// Makes a socket not yet bound owner-only (fchmod(2) on its descriptor): Linux creates the socket's file at bind with
    /// this mode less the umask, so the file never has the umask's wider mode. False where the kernel refuses.
    /// </summary>
    public static bool MakeOwnerOnlyBeforeBind(int socketDescriptor) => fchmod(socketDescriptor, 0b110_000_000) == 0;

    [DllImport("libc", SetLastError = true)]
    private static extern int fchmod(int fd, uint mode);

    /// <summary>Sends a signal to a process (kill(2)).</summary>
    public static bool SendSignal(int pid, int signal) => kill(pid, signal) == 0;

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>The real user id of this process (getuid(2)).</summary>
    public static uint CurrentUserId() => getuid();

    [DllImport("libc")]
    private static extern uint getuid();

    /// <summary>The credentials of a connected Unix socket's peer (SO_PEERCRED): pid, uid, gid at connect time.</summary>
    public static bool TryGetPeerCredentials(System.Net.Sockets.Socket socket, out Hosting.PeerCredentials peer)
    {
        const int SolSocket = 1, SoPeerCred = 17;
        Span<byte> ucred = stackalloc byte[12];
        try
        {
            if (socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) == ucred.Length)
            {
                peer = new(BitConverter.ToInt32(ucred), BitConverter.ToUInt32(ucred[4..]), BitConverter.ToUInt32(ucred[8..]));
                return true;
            }
        }
        catch (System.Net.Sockets.SocketException) { }
        catch (ObjectDisposedException) { }
        peer = default;
        return false;
    }

    /// <summary>Gives a file to a group, keeping its owner (chown(2) with owner -1).</summary>
    /// <summary>A second descriptor of an open one (close-on-exec), for a server that takes a socket over.</summary>
    public static int DuplicateDescriptor(int fd) => fcntl(fd, FcntlDuplicateCloseOnExec, 0);

    private const int FcntlDuplicateCloseOnExec = 1030; // F_DUPFD_CLOEXEC

    [DllImport("libc", SetLastError = true)]
    private static extern int fcntl(int fd, int cmd, int arg);

    public static bool SetGroup(string path, uint gid) => chown(path, uint.MaxValue, gid) == 0;

    [DllImport("libc", SetLastError = true)]
    private static extern int chown([MarshalAs(UnmanagedType.LPUTF8Str)] string pathname, uint owner, uint group);

    /// <summary>A group's id from its name or number (getgrnam(3), so NSS groups count too).</summary>
    public static uint? GroupId(string nameOrId)
    {
        if (uint.TryParse(nameOrId, out var gid)) return gid;
        var entry = getgrnam(nameOrId);
        // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; ... }
        return entry == IntPtr.Zero ? null : (uint)Marshal.ReadInt32(entry, 2 * IntPtr.Size);
    }

    [DllImport("libc")]
    private static extern IntPtr getgrnam([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    /// <summary>A user's id from its name or number (getpwnam(3), so NSS users count too).</summary>
    public static uint? UserId(string nameOrId)
    {
        if (uint.TryParse(nameOrId, out var uid)) return uid;
        var entry = getpwnam(nameOrId);
        // struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; ... }
        return entry == IntPtr.Zero ? null : (uint)Marshal.ReadInt32(entry, 2 * IntPtr.Size);
    }

    [DllImport("libc")]
    private static extern IntPtr getpwnam([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    /// <summary>
    /// True when one of stdin, stdout or stderr is a terminal whose foreground process group is ours: then
    /// the terminal's Ctrl-C reaches every process of the group by itself.
    /// </summary>
    public static bool IsInForegroundOfTerminal()
    {
        var group = getpgrp();
        for (var fd = 0; fd <= 2; fd++)
        {
            if (isatty(fd) == 1) return tcgetpgrp(fd) == group;
        }
        return false;
    }

    [DllImport("libc")]
    private static extern int isatty(int fd);

    [DllImport("libc")]
    private static extern int tcgetpgrp(int fd);

    [DllImport("libc")]
    private static extern int getpgrp();
}
