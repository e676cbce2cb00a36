using System.IO.Compression;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>Bounded reads and gzip decompression of request bodies; a body never grows past the limit.</summary>
internal static class Payload
{
    /// <summary>Reads the rest of <paramref name="source"/>; null when it holds more than <paramref name="limit"/> bytes.</summary>
    public static async Task<byte[]?> ReadToEndAsync(Stream source, int limit, CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        while (true)
        {
            int read = await source.ReadAsync(chunk, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return buffer.ToArray();
            }
            if (buffer.Length + read > limit)
            {
                return null;
            }
            buffer.Write(chunk, 0, read);
        }
    }

    // Magic (2) + method (1) + flags, mtime, xfl, os (7) and, at the end, CRC32 (4) + ISIZE (4).
    private const int GzipMinimumLength = 18;

    /// <summary>
    /// Decompresses a single-member gzip body (what HTTP and gRPC clients send); null when the result would
    /// exceed <paramref name="limit"/> bytes.
    /// </summary>
    /// <exception cref="InvalidDataException">The data is not gzip, or is truncated.</exception>
    public static byte[]? Gunzip(ReadOnlyMemory<byte> compressed, int limit)
    {
        var bytes = compressed.Span;
        if (bytes.Length < GzipMinimumLength || bytes[0] != 0x1F || bytes[1] != 0x8B || bytes[2] != 8)
        {
            throw new InvalidDataException($"not a gzip stream ({bytes.Length} bytes; needs the 1F 8B 08 header and an 8-byte trailer)");
        }
        // GZipStream reports a stream cut short as a clean end, so check the trailer's length (ISIZE) ourselves.
        uint declaredLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bytes[^4..]);
        var inflated = Inflate(compressed, limit);
        if (inflated is not null && (uint)inflated.Length != declaredLength)
        {
            throw new InvalidDataException($"gzip stream is truncated or corrupt: trailer says {declaredLength} bytes, decompressed {inflated.Length}");
        }
        return inflated;
    }

    private static byte[]? Inflate(ReadOnlyMemory<byte> compressed, int limit)
    {
        using var input = new MemoryStream(compressed.ToArray(), writable: false);
        using var gzip = new GZipStream(input, CompressionMode.Decompress);
        using var output = new MemoryStream();
        var chunk = new byte[16 * 1024];
        while (true)
        {
            int read = gzip.Read(chunk);
            if (read == 0)
            {
                return output.ToArray();
            }
            if (output.Length + read > limit)
            {
                return null;
            }
            output.Write(chunk, 0, read);
        }
    }
}
