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

    /// <summary>
    /// Decompresses a gzip body; null when the result would exceed <paramref name="limit"/> bytes.
    /// </summary>
    /// <exception cref="InvalidDataException">The data is not valid gzip.</exception>
    public static byte[]? Gunzip(ReadOnlyMemory<byte> compressed, int limit)
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
