//! Real storage servers for the remote-cache tests, on 127.0.0.1 only: nginx with WebDAV
//! (Debian's nginx-light and libnginx-mod-http-dav-ext) and moto's S3 server (PyPI
//! `moto[server]`), plus a port that refuses connections and a listener that never answers.
//! Never a mock of a storage server.
//!
//! Every server dies with the test process (PR_SET_PDEATHSIG). A server that cannot start
//! makes the test skip, saying why on stderr, unless `MEMO_TEST_REQUIRE_SERVERS=1`, when it
//! panics instead.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// True when a missing server must fail the test rather than skip it (set by `.ci/run`).
pub fn servers_required() -> bool {
    std::env::var("MEMO_TEST_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Skips (one line on stderr) or, when servers are required, panics.
fn unavailable<T>(why: &str, install: &str) -> Option<T> {
    if servers_required() {
        panic!("MEMO_TEST_REQUIRE_SERVERS=1 but {why}; install it with: {install}");
    }
    eprintln!("skipped: {why}; install it with: {install}");
    None
}

/// The full path of `name` on PATH (or in the sbin directories, where Debian puts nginx).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A port on 127.0.0.1 that was free a moment ago.
/// `http://127.0.0.1:PORT/<prefix>/`: give every test its own prefix.
fn loopback_url(port: u16, prefix: &str) -> String {
    format!("http://127.0.0.1:{port}/{}/", prefix.trim_matches('/'))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `cmd` so that it dies with this process. PR_SET_PDEATHSIG fires when the
/// *thread* that forked the child ends, and each test runs on a thread of its own that
/// ends with the test, so every server is forked from one thread that lives as long as
/// the process.
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("server-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap();
        Mutex::new(tx)
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would ever kill us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner.lock().unwrap().send((cmd, tx)).unwrap();
    rx.recv().unwrap()
}

/// Directories of the shared servers, removed when the test process exits (statics are
/// never dropped).
fn remove_at_exit(dir: PathBuf) {
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static REGISTERED: OnceLock<()> = OnceLock::new();
    extern "C" fn remove_all() {
        if let Ok(dirs) = DIRS.lock() {
            for dir in dirs.iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    REGISTERED.get_or_init(|| {
        // SAFETY: remove_all is a plain extern "C" function with no arguments.
        unsafe { libc::atexit(remove_all) };
    });
    DIRS.lock().unwrap().push(dir);
}

/// Waits until `child` accepts connections on `port`, or says why it did not.
fn wait_for_port(child: &mut Child, port: u16, patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited with {status}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("port {port} did not answer within {patience:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn run_quietly(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client, for the harness's own checks and for tampering.

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`, body with
/// Content-Length) and reads the whole answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], is_head: bool) -> io::Result<Response> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if is_head {
        Vec::new()
    } else if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(n) = length {
        rest.get(..n).ok_or_else(|| bad("short body"))?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------
// nginx with WebDAV.

const NGINX_INSTALL: &str = "apt-get install -y nginx-light libnginx-mod-http-dav-ext openssl";

/// The user and password that `/basic/` accepts.
pub const BASIC_USER: &str = "memo";
pub const BASIC_PASSWORD: &str = "s3cret";
/// The bearer token that `/bearer/` accepts.
pub const BEARER_TOKEN: &str = "tok123";

/// An nginx serving WebDAV from a data dir in its own temp dir, over http and https.
///
/// Locations: `/` WebDAV (PUT, DELETE, MKCOL, GET, HEAD; full put paths created);
/// `/basic/` the same behind basic auth (`BASIC_USER`, `BASIC_PASSWORD`); `/bearer/` the
/// same behind `Authorization: Bearer BEARER_TOKEN` (401 otherwise); `/fail500/` always
/// 500; `/forbid/` always 403. Killed on drop.
pub struct Nginx {
    child: Mutex<Option<Child>>,
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    https_port: u16,
}

impl Nginx {
    /// Starts a private nginx (or skips, see the module doc).
    pub fn start() -> Option<Nginx> {
        let Some(binary) = find_binary("nginx") else {
            return unavailable("nginx is not installed", NGINX_INSTALL);
        };
        if find_binary("openssl").is_none() {
            return unavailable("openssl is not installed", NGINX_INSTALL);
        }
        let mut last_error = String::new();
        // A port picked free may be taken before nginx binds it: try a few times.
        for _ in 0..3 {
            match Nginx::try_start(&binary) {
                Ok(nginx) => return Some(nginx),
                Err(e) => last_error = e,
            }
        }
        unavailable(
            &format!("nginx did not start ({last_error})"),
            NGINX_INSTALL,
        )
    }

    fn try_start(binary: &Path) -> Result<Nginx, String> {
        let dir = tempfile::Builder::new()
            .prefix("memo-nginx-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = dir.path();
        for sub in ["data", "tmp"] {
            std::fs::create_dir(root.join(sub)).map_err(|e| e.to_string())?;
        }
        make_certificates(root)?;
        let hash = run_quietly(Command::new("openssl").args(["passwd", "-apr1", BASIC_PASSWORD]))?;
        let hash = String::from_utf8_lossy(&hash).trim().to_string();
        std::fs::write(root.join("htpasswd"), format!("{BASIC_USER}:{hash}\n"))
            .map_err(|e| e.to_string())?;

        let port = free_port();
        let https_port = free_port();
        let conf = nginx_conf(root, port, https_port);
        std::fs::write(root.join("nginx.conf"), conf).map_err(|e| e.to_string())?;

        let child = spawn_nginx(binary, root, port, https_port)?;
        Ok(Nginx {
            child: Mutex::new(Some(child)),
            binary: binary.to_path_buf(),
            dir,
            port,
            https_port,
        })
    }

    /// Starts this nginx again after `stop`, on the same ports and data dir. False (and
    /// a line on stderr) if it cannot, e.g. when another process took a port meanwhile.
    pub fn restart(&self) -> bool {
        let mut child = self.child.lock().unwrap();
        if child.is_some() {
            return true;
        }
        match spawn_nginx(&self.binary, self.dir.path(), self.port, self.https_port) {
            Ok(started) => {
                *child = Some(started);
                true
            }
            Err(e) => {
                eprintln!("nginx did not restart: {e}");
                false
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    /// `http://127.0.0.1:PORT/<prefix>/`. Give every test its own prefix.
    pub fn url(&self, prefix: &str) -> String {
        loopback_url(self.port, prefix)
    }

    /// `https://127.0.0.1:HTTPS_PORT/<prefix>/`, trusted with `ca_file()`.
    pub fn https_url(&self, prefix: &str) -> String {
        format!(
            "https://127.0.0.1:{}/{}/",
            self.https_port,
            prefix.trim_matches('/')
        )
    }

    /// The PEM file of the CA that signed the https listener's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The directory nginx serves from.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file on disk behind `<prefix>/<rel>` (e.g. `rel` = `cas/<hex>`), for tampering.
    pub fn data_path(&self, prefix: &str, rel: &str) -> PathBuf {
        self.data_dir().join(prefix.trim_matches('/')).join(rel)
    }

    /// Every file under `<prefix>/<sub>` (e.g. `sub` = `ac`), sorted.
    pub fn files(&self, prefix: &str, sub: &str) -> Vec<PathBuf> {
        super::files_under(&self.data_path(prefix, sub))
    }

    /// Every request logged so far: (method, URI, status), in order.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let method = parts.next()?.to_string();
                let uri = parts.next()?.to_string();
                let status = parts.next()?.parse().ok()?;
                Some((method, uri, status))
            })
            .collect()
    }

    /// The logged requests whose URI starts with `/<prefix>/`.
    pub fn requests_under(&self, prefix: &str) -> Vec<(String, String, u16)> {
        let start = format!("/{}/", prefix.trim_matches('/'));
        self.requests()
            .into_iter()
            .filter(|(_, uri, _)| uri.starts_with(&start))
            .collect()
    }

    /// Sends one plain-http request to this nginx.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        http(self.port, method, path, headers, body)
    }

    /// Kills nginx and waits for it; its data dir stays. Safe to call twice.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs nginx on the config in `root` and waits until both ports answer.
fn spawn_nginx(binary: &Path, root: &Path, port: u16, https_port: u16) -> Result<Child, String> {
    let mut cmd = Command::new(binary);
    cmd.arg("-p")
        .arg(root)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .arg("-e")
        .arg(root.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn_tied(cmd).map_err(|e| format!("cannot run nginx: {e}"))?;
    let waited = wait_for_port(&mut child, port, Duration::from_secs(10))
        .and_then(|()| wait_for_port(&mut child, https_port, Duration::from_secs(10)));
    if let Err(e) = waited {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
        return Err(format!("{e}: {}", log.trim()));
    }
    Ok(child)
}

/// The nginx shared by every test of this binary, started on first use. Tests keep
/// apart by URL prefix. Never stop it: take your own `Nginx::start()` for that.
pub fn shared_nginx() -> Option<&'static Nginx> {
    static SHARED: OnceLock<Option<Nginx>> = OnceLock::new();
    let nginx = SHARED
        .get_or_init(|| {
            let nginx = Nginx::start()?;
            remove_at_exit(nginx.dir.path().to_path_buf());
            Some(nginx)
        })
        .as_ref();
    if nginx.is_none() && servers_required() {
        panic!("MEMO_TEST_REQUIRE_SERVERS=1 but the shared nginx did not start (see above)");
    }
    nginx
}

/// A CA, and a certificate for 127.0.0.1 signed by it (rustls refuses a self-signed
/// certificate that is its own CA as a server's certificate).
fn make_certificates(root: &Path) -> Result<(), String> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run_quietly(
        Command::new("openssl")
            .current_dir(root)
            .args(["req", "-x509", "-nodes", "-days", "3"])
            .args(ec)
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=memo test CA",
            ]),
    )?;
    run_quietly(
        Command::new("openssl")
            .current_dir(root)
            .args(["req", "-nodes"])
            .args(ec)
            .args([
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ]),
    )?;
    std::fs::write(
        root.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    run_quietly(Command::new("openssl").current_dir(root).args([
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]))?;
    Ok(())
}

/// The dav-ext module's `load_module` line, if the module is installed.
fn dav_ext_module() -> Option<String> {
    let candidates = [
        "/usr/share/nginx/modules/ngx_http_dav_ext_module.so",
        "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so",
    ];
    candidates
        .iter()
        .find(|p| Path::new(p).is_file())
        .map(|p| format!("load_module {p};"))
}

fn nginx_conf(root: &Path, port: u16, https_port: u16) -> String {
    let r = root.display();
    let dav = "dav_methods PUT DELETE MKCOL; create_full_put_path on; \
               dav_access user:rw group:rw all:r;";
    format!(
        r#"{load}
# One process, as the user running the tests: the data dir is a 0700 temp dir, which the
# default worker user (nobody) could not write.
daemon off;
master_process off;
worker_processes 1;
pid {r}/nginx.pid;
error_log {r}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format memo '$request_method $request_uri $status';
    access_log {r}/access.log memo;
    client_body_temp_path {r}/tmp/body;
    proxy_temp_path {r}/tmp/proxy;
    fastcgi_temp_path {r}/tmp/fastcgi;
    uwsgi_temp_path {r}/tmp/uwsgi;
    scgi_temp_path {r}/tmp/scgi;
    client_max_body_size 0;
    default_type application/octet-stream;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate {r}/server.pem;
        ssl_certificate_key {r}/server.key;
        root {r}/data;
        location / {{ {dav} }}
        location /basic/ {{
            auth_basic "memo";
            auth_basic_user_file {r}/htpasswd;
            {dav}
        }}
        location /bearer/ {{
            if ($http_authorization != "Bearer {BEARER_TOKEN}") {{ return 401; }}
            {dav}
        }}
        location /small/ {{
            client_max_body_size 4k;
            {dav}
        }}
        location /fail500/ {{ return 500; }}
        location /forbid/ {{ return 403; }}
    }}
}}
"#,
        load = dav_ext_module().unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------------------
// Apache httpd with mod_dav: unlike nginx with create_full_put_path, a PUT into a missing
// collection gets 409 until the collection is made (MKCOL).

const APACHE_INSTALL: &str = "apt-get install apache2";

/// A private Apache with WebDAV on 127.0.0.1, serving its own data dir. It runs as
/// `nobody` (Apache refuses root) in one process (`-X`), started through `setpriv` so
/// that it keeps its parent-death signal across the change of user.
pub struct Apache {
    child: Mutex<Option<Child>>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Apache {
    /// Starts a private Apache (or skips, see the module doc).
    pub fn start() -> Option<Apache> {
        let (Some(binary), Some(setpriv)) = (find_binary("apache2"), find_binary("setpriv")) else {
            return unavailable("apache2 (or setpriv) is not installed", APACHE_INSTALL);
        };
        let modules = Path::new("/usr/lib/apache2/modules");
        if !modules.join("mod_dav_fs.so").exists() {
            return unavailable("apache2's mod_dav_fs is missing", APACHE_INSTALL);
        }
        let mut last_error = String::new();
        for _ in 0..3 {
            match Apache::try_start(&binary, &setpriv, modules) {
                Ok(apache) => return Some(apache),
                Err(e) => last_error = e,
            }
        }
        unavailable(
            &format!("apache2 did not start ({last_error})"),
            APACHE_INSTALL,
        )
    }

    fn try_start(binary: &Path, setpriv: &Path, modules: &Path) -> Result<Apache, String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("memo-apache-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = dir.path();
        std::fs::create_dir(root.join("data")).map_err(|e| e.to_string())?;
        let port = free_port();
        let m = |name: &str| modules.join(name).display().to_string();
        let conf = format!(
            "ServerRoot {r}\nServerName 127.0.0.1\nPidFile {r}/httpd.pid\nListen 127.0.0.1:{port}\n\
             LoadModule mpm_event_module {mpm}\nLoadModule authz_core_module {authz}\n\
             LoadModule dav_module {dav}\nLoadModule dav_fs_module {dav_fs}\n\
             ErrorLog {r}/error.log\nDavLockDB {r}/davlock\nDocumentRoot {r}/data\n\
             <Directory {r}/data>\n  Dav On\n  Require all granted\n</Directory>\n",
            r = root.display(),
            mpm = m("mod_mpm_event.so"),
            authz = m("mod_authz_core.so"),
            dav = m("mod_dav.so"),
            dav_fs = m("mod_dav_fs.so"),
        );
        std::fs::write(root.join("httpd.conf"), conf).map_err(|e| e.to_string())?;
        // Apache runs as nobody: it must reach and write its directory.
        for path in [root, &root.join("data")] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| e.to_string())?;
        }
        let mut cmd = Command::new(setpriv);
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--pdeathsig",
            "SIGKILL",
        ])
        .arg(binary)
        .arg("-X")
        .arg("-f")
        .arg(root.join("httpd.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = spawn_tied(cmd).map_err(|e| format!("cannot run apache2: {e}"))?;
        if let Err(e) = wait_for_port(&mut child, port, Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
            return Err(format!("{e}: {}", log.trim()));
        }
        Ok(Apache {
            child: Mutex::new(Some(child)),
            dir,
            port,
        })
    }

    /// `http://127.0.0.1:PORT/<prefix>/`.
    pub fn url(&self, prefix: &str) -> String {
        loopback_url(self.port, prefix)
    }

    /// Every file under `<prefix>/<sub>` of the data dir, sorted.
    pub fn files(&self, prefix: &str, sub: &str) -> Vec<PathBuf> {
        super::files_under(
            &self
                .dir
                .path()
                .join("data")
                .join(prefix.trim_matches('/'))
                .join(sub),
        )
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// moto's S3 server.

const MOTO_INSTALL: &str = "pip install 'moto[server]'";

/// A moto S3 server (path-style, accepts unsigned requests). Killed on drop.
pub struct Moto {
    child: Mutex<Option<Child>>,
    port: u16,
}

impl Moto {
    /// Starts a private moto_server (or skips, see the module doc).
    pub fn start() -> Option<Moto> {
        let Some(binary) = find_binary("moto_server") else {
            return unavailable("moto_server is not installed", MOTO_INSTALL);
        };
        let mut last_error = String::new();
        for _ in 0..3 {
            match Moto::try_start(&binary) {
                Ok(moto) => return Some(moto),
                Err(e) => last_error = e,
            }
        }
        unavailable(
            &format!("moto_server did not start ({last_error})"),
            MOTO_INSTALL,
        )
    }

    fn try_start(binary: &Path) -> Result<Moto, String> {
        let port = free_port();
        let mut cmd = Command::new(binary);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn_tied(cmd).map_err(|e| format!("cannot run moto_server: {e}"))?;
        let waited = wait_for_port(&mut child, port, Duration::from_secs(60)).and_then(|()| {
            // The port opens before the app answers: wait for a real answer.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if http(port, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err("it never answered GET /".to_string());
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        if let Err(e) = waited {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Moto {
            child: Mutex::new(Some(child)),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables memo needs to reach this server: credentials (any values), region
    /// and endpoint.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "memo-test-key"),
            ("AWS_SECRET_ACCESS_KEY", "memo-test-secret"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("AWS_ENDPOINT_URL".to_string(), self.endpoint())])
        .collect()
    }

    /// One request to moto. It checks no signature, but treats a request without an
    /// Authorization header as anonymous and refuses it a private object (403), so send a
    /// well-formed one with a dummy signature.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
        let auth = "AWS4-HMAC-SHA256 Credential=memo-test-key/20260101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=00";
        let headers = [
            ("Authorization", auth),
            ("Content-Type", "application/octet-stream"),
        ];
        http(self.port, method, path, &headers, body)
    }

    /// Creates `bucket` (3 to 63 characters: a-z, 0-9, '-'); panics if moto refuses.
    pub fn create_bucket(&self, bucket: &str) {
        let r = self.request("PUT", &format!("/{bucket}"), b"").unwrap();
        assert!(r.status == 200, "create bucket {bucket}: {r:?}");
    }

    /// The bytes of `bucket/key`, or None when absent.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = self
            .request("GET", &format!("/{bucket}/{key}"), b"")
            .unwrap();
        match r.status {
            200 => Some(r.body),
            404 => None,
            other => panic!("GET {bucket}/{key}: status {other}"),
        }
    }

    /// Writes `bucket/key` (for tampering); panics if moto refuses.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let r = self
            .request("PUT", &format!("/{bucket}/{key}"), bytes)
            .unwrap();
        assert!(r.status == 200, "PUT {bucket}/{key}: status {}", r.status);
    }

    /// Every key in `bucket`, sorted.
    pub fn list(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&max-keys=1000");
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", percent_encode(t)));
            }
            let r = self.request("GET", &path, b"").unwrap();
            assert!(r.status == 200, "list {bucket}: status {}", r.status);
            let xml = String::from_utf8_lossy(&r.body).into_owned();
            keys.extend(xml_values(&xml, "Key"));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() || !xml.contains("<IsTruncated>true</IsTruncated>") {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// Kills moto (and with it every bucket). Safe to call twice.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The moto shared by every test of this binary, started on first use. Tests keep
/// apart by bucket. Never stop it.
pub fn shared_moto() -> Option<&'static Moto> {
    static SHARED: OnceLock<Option<Moto>> = OnceLock::new();
    let moto = SHARED.get_or_init(Moto::start).as_ref();
    if moto.is_none() && servers_required() {
        panic!("MEMO_TEST_REQUIRE_SERVERS=1 but the shared moto_server did not start (see above)");
    }
    moto
}

fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        found.push(
            rest[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &rest[end + close.len()..];
    }
    found
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Servers that misbehave.

/// `http://127.0.0.1:PORT/` where nothing listens: connections are refused.
pub fn refusing_url() -> String {
    format!("http://127.0.0.1:{}/", free_port())
}

/// A listener that accepts connections and never answers, counting them. It holds every
/// connection open until dropped.
pub struct Silent {
    port: u16,
    connections: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    accepter: Option<thread::JoinHandle<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let accepter = {
            let connections = Arc::clone(&connections);
            let stopping = Arc::clone(&stopping);
            thread::spawn(move || {
                let mut held = Vec::new();
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        connections.fetch_add(1, Ordering::SeqCst);
                        held.push(stream);
                    }
                }
                for stream in held {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            })
        };
        Silent {
            port,
            connections,
            stopping,
            accepter: Some(accepter),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/<prefix>/`.
    pub fn url(&self, prefix: &str) -> String {
        loopback_url(self.port, prefix)
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

/// A TCP relay in front of a real server, counting the connections it accepts. While the
/// file `hold` exists, it holds each new connection (accepted, nothing forwarded) until
/// the file goes: a command run by memo can create it to freeze memo's next requests.
/// It forwards bytes unchanged and knows nothing of HTTP.
pub struct Relay {
    port: u16,
    connections: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    accepter: Option<thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(target_port: u16, hold: Option<PathBuf>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let accepter = {
            let connections = Arc::clone(&connections);
            let stopping = Arc::clone(&stopping);
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let hold = hold.clone();
                    let stopping = Arc::clone(&stopping);
                    thread::spawn(move || {
                        while hold.as_ref().is_some_and(|h| h.exists()) {
                            if stopping.load(Ordering::SeqCst) {
                                return;
                            }
                            thread::sleep(Duration::from_millis(20));
                        }
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) {
                            relay_both_ways(client, server);
                        }
                    });
                }
            })
        };
        Relay {
            port,
            connections,
            stopping,
            accepter: Some(accepter),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/<prefix>/`.
    pub fn url(&self, prefix: &str) -> String {
        loopback_url(self.port, prefix)
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn relay_both_ways(client: TcpStream, server: TcpStream) {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    };
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let upstream = thread::spawn(move || copy(client, server));
    copy(s2, c2);
    let _ = upstream.join();
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}
