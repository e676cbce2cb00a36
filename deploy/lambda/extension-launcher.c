/*
 * The Lambda extension's first steps, in C. Lambda starts the function's runtime only after every extension has
 * registered, and Init ends only when every extension has asked for its first event; the .NET runtime alone takes
 * about 80 ms to reach the agent's code, and the export's set-up much longer. This binds the agent's socket (the shim
 * connects as soon as the runtime starts; the backlog holds it), registers with the Extensions API, sends the first
 * /event/next, and then becomes the agent (execv: the same process, as Lambda expects), which adopts all three and
 * reads that event's response when it is ready:
 *
 *     extension-launcher AGENT NAME
 *     -> AGENT lambda-extension --name NAME --socket PATH --listen-fd FD --extension-id ID [--event-fd FD]
 *
 * Whatever it cannot do (no API address, a refusal, a socket path in use, extra arguments) it leaves to the agent:
 * it runs "AGENT lambda-extension --name NAME [ARGS...]" as if it were not there, and the agent tries again and says
 * why if that fails too. Built by build-layer.sh; the layer's extensions/telemetry-agent runs it when present.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A registration response is a few headers and a short JSON body (the agent reads at most as much). */
#define MAX_RESPONSE_BYTES (64 * 1024)
#define IDENTIFIER_HEADER "Lambda-Extension-Identifier:"

/* The agent's and the shim's default socket (ServeCommand.DefaultSocketPath, telemetry_shim._settings). */
static int default_socket_path(char *path, size_t size)
{
    const char *configured = getenv("TELEMETRY_AGENT_SOCKET");
    const char *runtime_dir = getenv("XDG_RUNTIME_DIR");
    int written;
    if (configured && *configured)
        written = snprintf(path, size, "%s", configured);
    else if (runtime_dir && *runtime_dir)
        written = snprintf(path, size, "%s/telemetry-agent.sock", runtime_dir);
    else
        written = snprintf(path, size, "/tmp/telemetry-agent-%u.sock", (unsigned)getuid());
    return written > 0 && (size_t)written < size;
}

/* A listening socket at path, owner-only from the start, or -1. Inherited by the agent: no close-on-exec. */
static int listen_at(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (path[0] != '/' || strlen(path) >= sizeof address.sun_path)
        return -1;
    strcpy(address.sun_path, path);
    int listening = socket(AF_UNIX, SOCK_STREAM, 0);
    if (listening < 0)
        return -1;
    mode_t previous = umask(0177);
    int bound = bind(listening, (struct sockaddr *)&address, sizeof address);
    umask(previous);
    /* The agent's backlog (UnixSocketListener.BindListening). */
    if (bound != 0 || chmod(path, 0600) != 0 || listen(listening, 512) != 0) {
        if (bound == 0)
            unlink(path);
        close(listening);
        return -1;
    }
    return listening;
}

/* A connection to host:port; not close-on-exec, as the agent inherits the one that asks for the first event. */
static int connect_to(const char *host_and_port)
{
    char host[256];
    const char *colon = strrchr(host_and_port, ':');
    if (!colon || colon == host_and_port || (size_t)(colon - host_and_port) >= sizeof host)
        return -1;
    memcpy(host, host_and_port, colon - host_and_port);
    host[colon - host_and_port] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *found;
    if (getaddrinfo(host, colon + 1, &hints, &found) != 0)
        return -1;
    int connection = -1;
    for (struct addrinfo *each = found; each && connection < 0; each = each->ai_next) {
        connection = socket(each->ai_family, each->ai_socktype, each->ai_protocol);
        if (connection >= 0 && connect(connection, each->ai_addr, each->ai_addrlen) != 0) {
            close(connection);
            connection = -1;
        }
    }
    freeaddrinfo(found);
    return connection;
}

static int send_all(int connection, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t sent = send(connection, data, length, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            return 0;
        data += sent;
        length -= (size_t)sent;
    }
    return 1;
}

/* Registers name for INVOKE and SHUTDOWN (the request ExtensionsApiClient.RegisterAsync sends); writes the
   identifier Lambda gave, or returns 0. */
static int register_extension(const char *runtime_api, const char *name, char *identifier, size_t size)
{
    static const char body[] = "{\"events\":[\"INVOKE\",\"SHUTDOWN\"]}";
    static char response[MAX_RESPONSE_BYTES + 1];
    char request[1024];
    if (strpbrk(name, "\r\n") || strpbrk(runtime_api, "\r\n"))
        return 0;
    int length = snprintf(request, sizeof request,
                          "POST /2020-01-01/extension/register HTTP/1.1\r\nHost: %s\r\nLambda-Extension-Name: %s\r\n"
                          "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          runtime_api, name, sizeof body - 1, body);
    if (length <= 0 || (size_t)length >= sizeof request)
        return 0;
    int connection = connect_to(runtime_api);
    if (connection < 0)
        return 0;
    size_t received = 0;
    if (send_all(connection, request, (size_t)length)) {
        ssize_t read;
        while (received < MAX_RESPONSE_BYTES &&
               ((read = recv(connection, response + received, MAX_RESPONSE_BYTES - received, 0)) > 0 ||
                (read < 0 && errno == EINTR)))
            if (read > 0)
                received += (size_t)read;
    }
    close(connection);
    response[received] = '\0';
    char *headers_end = strstr(response, "\r\n\r\n");
    if (!headers_end || strncmp(response, "HTTP/1.", 7) != 0 || strncmp(response + 8, " 200", 4) != 0)
        return 0;
    *headers_end = '\0';
    for (char *line = strstr(response, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, IDENTIFIER_HEADER, sizeof IDENTIFIER_HEADER - 1) != 0)
            continue;
        char *value = line + sizeof IDENTIFIER_HEADER - 1;
        value += strspn(value, " \t");
        size_t value_length = strcspn(value, "\r");
        while (value_length > 0 && (value[value_length - 1] == ' ' || value[value_length - 1] == '\t'))
            value_length--;
        if (value_length == 0 || value_length >= size)
            return 0;
        memcpy(identifier, value, value_length);
        identifier[value_length] = '\0';
        return 1;
    }
    return 0;
}

/* A connection on which /event/next was asked for identifier, its response still to come, or -1. Connection: close,
   so that the agent reads the response to its end. */
static int ask_for_next_event(const char *runtime_api, const char *identifier)
{
    char request[1024];
    int length = snprintf(request, sizeof request,
                          "GET /2020-01-01/extension/event/next HTTP/1.1\r\nHost: %s\r\nLambda-Extension-Identifier: %s\r\n"
                          "Connection: close\r\n\r\n",
                          runtime_api, identifier);
    if (length <= 0 || (size_t)length >= sizeof request)
        return -1;
    int connection = connect_to(runtime_api);
    if (connection >= 0 && !send_all(connection, request, (size_t)length)) {
        close(connection);
        return -1;
    }
    return connection;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s AGENT NAME [ARGS...]: registers NAME as a Lambda extension, then runs "
                        "AGENT lambda-extension\n", argv[0]);
        return 2;
    }
    const char *agent = argv[1], *name = argv[2];
    const char *runtime_api = getenv("AWS_LAMBDA_RUNTIME_API");
    char socket_path[sizeof ((struct sockaddr_un *)0)->sun_path];
    char identifier[256], descriptor[16], event_descriptor[16];
    int listening = -1;
    if (argc == 3 && runtime_api && *runtime_api && default_socket_path(socket_path, sizeof socket_path) &&
        (listening = listen_at(socket_path)) >= 0 &&
        register_extension(runtime_api, name, identifier, sizeof identifier)) {
        snprintf(descriptor, sizeof descriptor, "%d", listening);
        char *adopting[] = {(char *)agent, "lambda-extension", "--name", (char *)name, "--socket", socket_path,
                            "--listen-fd", descriptor, "--extension-id", identifier, NULL, NULL, NULL};
        /* Without it the agent asks for the first event itself. */
        int next_event = ask_for_next_event(runtime_api, identifier);
        if (next_event >= 0) {
            snprintf(event_descriptor, sizeof event_descriptor, "%d", next_event);
            adopting[10] = "--event-fd";
            adopting[11] = event_descriptor;
        }
        execv(agent, adopting);
    }
    if (listening >= 0) {
        close(listening);
        unlink(socket_path);
    }
    char **alone = calloc((size_t)argc + 3, sizeof *alone);
    if (alone) {
        alone[0] = (char *)agent;
        alone[1] = "lambda-extension";
        alone[2] = "--name";
        alone[3] = (char *)name;
        for (int each = 3; each < argc; each++)
            alone[each + 1] = argv[each];
        execv(agent, alone);
    }
    fprintf(stderr, "telemetry-agent extension launcher: cannot run %s: %s\n", agent, strerror(errno));
    return 1;
}
