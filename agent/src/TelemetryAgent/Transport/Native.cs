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
        // struct stat's layout differs per architecture; statx(2) has one layout everywhere, with
        // stx_mode as a u16 at offset 28.
        var buffer = new byte[256];
        const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100, StatxType = 0x1;
        if (statx(AtFdCwd, path, AtSymlinkNoFollow, StatxType, buffer) != 0)
        {
            fileType = 0;
            return false;
        }
        fileType = BitConverter.ToUInt16(buffer, 28) & FileTypeMask;
        return true;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string pathname, int flags, uint mask, byte[] statxbuf);

    /// <summary>Sends a signal to a process (kill(2)).</summary>
    public static bool SendSignal(int pid, int signal) => kill(pid, signal) == 0;

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>The real user id of this process (getuid(2)).</summary>
    public static uint CurrentUserId() => getuid();

    [DllImport("libc")]
    private static extern uint getuid();
}
