//! Loopback peers the live tests talk to: nginx with its RTMP module (an origin to pull
//! from, and a platform with a control API), and GStreamer publishers.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_for(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nginx with the RTMP module: RTMP on one loopback port, its control API on another.
pub struct Nginx {
    child: Child,
    pub rtmp: u16,
    pub http: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start() -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let (rtmp, http) = (free_port(), free_port());
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
                 daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{rtmp}; application live {{ live on; }} }} }}\n\
                 http {{ access_log off;\n\
                   server {{ listen 127.0.0.1:{http}; location /control {{ rtmp_control all; }}\n\
                     location /stat {{ rtmp_stat all; }} }} }}\n"
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (make setup)");
        wait_for(&format!("127.0.0.1:{rtmp}"));
        wait_for(&format!("127.0.0.1:{http}"));
        Nginx { child, rtmp, http, _dir: dir }
    }
}

impl Nginx {
    /// Whether a publisher is on `live/{name}` now (nginx's `rtmp_stat` page).
    pub fn publishing(&self, name: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.http)) else { return false };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        if s.write_all(b"GET /stat HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
            return false;
        }
        let mut page = String::new();
        let _ = s.read_to_string(&mut page);
        page.split("<stream>").any(|st| st.contains(&format!("<name>{name}</name>")) && st.contains("<publishing/>"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A live H.264 publisher (`rtmp2sink`): `secs` seconds at 30 fps, a keyframe every
/// second, to `url`.
pub fn publish(url: &str, secs: u32, pattern: &str) -> Child {
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers={} pattern={pattern} ! video/x-raw,width=640,height=360,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse ! flvmux streamable=true \
         ! rtmp2sink location={url}",
        secs * 30
    );
    super::gst_spawn(&pipeline, Stdio::piped())
}

/// A live publisher showing the (benign) astronaut photo, the tests' banked image, for
/// `secs` seconds at 25 fps, a keyframe every second, to `url`.
pub fn publish_astronaut(url: &str, secs: u32) -> Child {
    let pipeline = format!(
        "filesrc location={} ! decodebin ! videoconvert \
         ! imagefreeze is-live=true num-buffers={} ! video/x-raw,framerate=25/1 ! videoconvert \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! h264parse ! flvmux streamable=true \
         ! rtmp2sink location={url}",
        super::astronaut().display(),
        secs * 25
    );
    super::gst_spawn(&pipeline, Stdio::null())
}

/// The config of a worker with one interrupt bank, an RTMP listener on `rtmp_port` (key
/// `alice-key-123` for stream `alice`), Kafka on `broker` and fleet membership.
pub fn fleet_worker_config(bank: &std::path::Path, rtmp_port: u16, broker: &str, spool: &std::path::Path) -> String {
    format!(
        "[media]\nsampling = \"adaptive\"\n\
         [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n\
         [sink.kafka]\nbrokers = \"{broker}\"\nspool_path = \"{}\"\n[fleet]\nsession_timeout_secs = 6\npull_hosts = [\"127.0.0.1\"]\n",
        bank.display(),
        spool.display()
    )
}
