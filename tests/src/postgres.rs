//! A throwaway PostgreSQL cluster for one test: Debian's PostgreSQL binaries
//! (`/usr/lib/postgresql/<version>/bin`), `initdb` into a temporary dir, the server on a free
//! loopback port with its socket in that dir and `fsync` off (nothing here has to survive a
//! crash). It is stopped and removed when dropped.
//!
//! `initdb` refuses to run as root, and tests and CI run as root: then the cluster belongs to the
//! `postgres` system user (which the Debian package creates) and every command runs as that user
//! (`runuser -u postgres --`). Logins over TCP need a password (scram-sha-256), so the URL a
//! test gets carries one, as a real deployment's would; over the socket the cluster trusts its
//! own user, for the test's set-up commands.

use std::path::PathBuf;
use std::process::Command;

/// The user the tests log in as.
pub const USER: &str = "lcw";

/// A running cluster.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    password: String,
    as_postgres: bool,
    // Last: removed after the server has stopped.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Starts a cluster. Panics with the install command when the binaries are missing, and with
    /// the server's log when it does not start.
    pub fn start() -> PgCluster {
        let bin = binaries();
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("lcw-pg").tempdir().expect("temp dir");
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("password file");
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()), "chown the cluster dir");
        }
        let data = dir.path().join("data");
        let mut cluster = PgCluster { bin, data, port: 0, password, as_postgres, dir };
        let mut initdb = cluster.command("initdb");
        initdb
            .arg("-D")
            .arg(&cluster.data)
            .args(["-U", USER, "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync", "--no-locale"])
            .args(["-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(&mut initdb, "initdb");
        let _ = std::fs::remove_file(&pwfile);
        cluster.start_server();
        cluster
    }

    /// A hot standby of this cluster, as PostgreSQL's streaming replication makes one: a base
    /// backup (`pg_basebackup -R`) that streams the primary's WAL, read-only, on its own port and
    /// with the primary's logins.
    pub fn standby(&self) -> PgCluster {
        let dir = tempfile::Builder::new().prefix("lcw-pg-standby").tempdir().expect("temp dir");
        if self.as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()), "chown the standby dir");
        }
        let data = dir.path().join("data");
        let mut backup = self.command("pg_basebackup");
        backup.arg("-h").arg(self.dir.path()).args(["-p", &self.port.to_string(), "-U", USER, "-D"]).arg(&data).args([
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ]);
        run(&mut backup, "pg_basebackup");
        let mut standby = PgCluster {
            bin: self.bin.clone(),
            data,
            port: 0,
            password: self.password.clone(),
            as_postgres: self.as_postgres,
            dir,
        };
        standby.start_server();
        standby
    }

    /// Starts the server on a free port.
    fn start_server(&mut self) {
        // A free port can be taken by another test between our probe and the server's bind.
        for attempt in 0.. {
            self.port = free_port();
            let log = self.dir.path().join("server.log");
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=20",
                self.port,
                self.dir.path().display()
            );
            let status = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("pg_ctl runs");
            if status.success() {
                break;
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(attempt < 3 && text.contains("could not bind"), "PostgreSQL did not start:\n{text}");
        }
    }

    /// `postgres://lcw:<password>@127.0.0.1:<port>/<database>`.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{USER}:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }

    /// The URL of the default database (`postgres`).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The login password (a test checks that it never shows).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Creates the database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let mut createdb = self.command("createdb");
        createdb.arg("-h").arg(self.dir.path()).args(["-p", &self.port.to_string(), "-U", USER, name]);
        run(&mut createdb, "createdb");
        self.url_of(name)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL server binaries are missing (no /usr/lib/postgresql/*/bin/initdb): install them with \
             `apt-get install -y postgresql` (.ci/run does)"
        )
    })
}

/// Whether this process runs as root: `/proc/self` belongs to the process's user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
