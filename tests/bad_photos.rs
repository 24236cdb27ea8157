//! Real photo folders hold broken and odd files. A corpus of them, made here (not committed
//! as binary junk), goes through the command line: each bad file gets a one-line reason,
//! odd but valid photos are scored, videos and sidecars are left out quietly, and the run
//! always goes on. A photo folder is byte-for-byte the same after a ranking, an export and
//! a copy to another folder.

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PNG whose header declares `w` x `h` pixels, followed by the start of its pixel
/// data (a zlib stream of zero rows): a decompression bomb as far as sizes go.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        c.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        c
    }
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    // zlib header, then one stored (uncompressed) deflate block of 1024 zero bytes
    let mut idat = vec![0x78, 0x01, 0x00];
    idat.extend_from_slice(&1024u16.to_le_bytes());
    idat.extend_from_slice(&(!1024u16).to_le_bytes());
    idat.extend_from_slice(&[0; 1024]);
    out.extend(chunk(b"IDAT", &idat));
    out.extend(chunk(b"IEND", &[]));
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A JPEG with an EXIF orientation tag, stored `w` x `h`.
fn oriented_jpeg(w: u32, h: u32, orientation: u16) -> Vec<u8> {
    use image::ImageEncoder;
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 3) as u8, 40]));
    // TIFF header (little endian), one IFD entry: Orientation (0x0112), SHORT, 1 value.
    let mut exif = b"II*\x00\x08\x00\x00\x00\x01\x00".to_vec();
    exif.extend_from_slice(&0x0112u16.to_le_bytes());
    exif.extend_from_slice(&3u16.to_le_bytes());
    exif.extend_from_slice(&1u32.to_le_bytes());
    exif.extend_from_slice(&orientation.to_le_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    enc.set_exif_metadata(exif).unwrap();
    enc.write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        for shade in [30u8, 220] {
            let frame = image::RgbaImage::from_pixel(40, 30, image::Rgba([shade, 100, 50, 255]));
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    out
}

fn png16() -> Vec<u8> {
    let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(48, 40, |x, _| {
        image::Rgb([x as u16 * 1000, 20_000, 60_000])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb16(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// Writes the corpus; returns (file name, expected reason fragment or None for scored).
fn make_corpus(dir: &Path) -> Vec<(PathBuf, Option<&'static str>)> {
    let mut cases: Vec<(PathBuf, Option<&'static str>)> = Vec::new();
    let mut put = |name: &str, bytes: &[u8], expect: Option<&'static str>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        cases.push((p, expect));
    };
    let jpeg = std::fs::read(common::photo_dir().join("beach_landscape.jpg")).unwrap();
    let good_png = png(64, 48);
    put("zero-bytes.jpg", b"", Some("the file is empty"));
    put("cut.jpg", &jpeg[..jpeg.len() / 2], Some("ends too early"));
    put(
        "cut.png",
        &good_png[..good_png.len() / 2],
        Some("damaged or cut short"),
    );
    put(
        "notes.jpg",
        b"Shopping list: lychees, a red umbrella, sunscreen.",
        Some("not an image"),
    );
    put(
        "bomb.png",
        &bomb_png(100_000, 100_000),
        Some("too large to open safely"),
    );
    put("one-pixel.png", &png(1, 1), Some("too small"));
    put("sliver.png", &png(30_000, 20), Some("aspect ratio"));
    put("animated.gif", &animated_gif(), None);
    put("deep-16-bit.png", &png16(), None);
    put(
        "cmyk.jpg",
        &std::fs::read(common::photo_dir().join("cmyk_print.jpg")).unwrap(),
        None,
    );
    for o in 1..=8u16 {
        put(
            &format!("orientation-{o}.jpg"),
            &oriented_jpeg(60, 40, o),
            None,
        );
    }
    put(
        "clip.mp4",
        b"\x00\x00\x00\x18ftypmp42 not really a video",
        None,
    );
    put("orientation-1.jpg.xmp", b"<x:xmpmeta/>", None);
    cases.retain(|(p, _)| {
        !p.to_string_lossy().ends_with(".mp4") && !p.to_string_lossy().ends_with(".xmp")
    });
    cases
}

fn rank(dir: &Path) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .env("LYCHEE_CACHE_DIR", cache.path())
        .args(["rank", "--json", "--query", "a photo", "--model"])
        .arg(common::model_dir())
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn every_bad_file_gets_a_reason_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("card");
    std::fs::create_dir(&dir).unwrap();
    let cases = make_corpus(&dir);
    // a folder link that points back up: the walk must not loop
    #[cfg(unix)]
    std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();
    // a name that is not UTF-8
    #[cfg(target_os = "linux")]
    let odd_name = {
        use std::os::unix::ffi::OsStrExt;
        let p = dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
        std::fs::write(&p, png(64, 48)).unwrap();
        p
    };

    let out = rank(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loops back"), "{stderr}");
    assert!(stderr.contains("2 other files left out"), "{stderr}");
    let rows: BTreeMap<String, Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["path"].as_str().unwrap().to_owned(), v))
        .collect();
    for (path, expect) in &cases {
        let row = rows
            .get(path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{} missing from the output", path.display()));
        match expect {
            Some(reason) => {
                let error = row["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{} was scored: {row}", path.display()));
                assert!(error.contains(reason), "{}: {error}", path.display());
                assert!(!error.contains('\n'), "one line: {error}");
            }
            None => assert!(row.get("score").is_some(), "{}: {row}", path.display()),
        }
    }
    // EXIF orientations 5 to 8 turn the photo a quarter: judged as displayed
    for o in 1..=8 {
        let row = &rows[dir.join(format!("orientation-{o}.jpg")).to_str().unwrap()];
        let expect = if o >= 5 { [40, 60] } else { [60, 40] };
        assert_eq!(
            row["original_size"],
            serde_json::json!(expect),
            "orientation {o}"
        );
    }
    #[cfg(target_os = "linux")]
    assert!(
        rows.contains_key(&*odd_name.to_string_lossy()),
        "the non-UTF-8 name is ranked"
    );
}

#[test]
fn a_photo_gone_between_scan_and_score_is_reported() {
    use lychee_rerank::model::{ComputeDevice, Reranker};
    use lychee_rerank::worker::rank::{RankEvent, RankRequest, RankSettings, run_ranking};
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("keep.png");
    let gone = tmp.path().join("gone.png");
    std::fs::write(&keep, png(64, 48)).unwrap();
    std::fs::write(&gone, png(64, 48)).unwrap();
    let scan = lychee_rerank::library::scan_paths(&[tmp.path()]);
    assert_eq!(scan.photos.len(), 2);
    std::fs::remove_file(&gone).unwrap();
    let model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    let request = RankRequest::new("x", scan.photos.clone());
    let mut events = Vec::new();
    run_ranking(
        &model,
        &request,
        RankSettings {
            max_batch: 2,
            time_stages: false,
        },
        None,
        &Default::default(),
        |e| events.push(e),
    )
    .unwrap();
    let gone_index = scan.photos.iter().position(|p| *p == gone).unwrap();
    assert!(events.iter().any(|e| matches!(e, RankEvent::PhotoFailed { index, reason } if *index == gone_index && reason.contains("no longer exists"))), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RankEvent::PhotoScored { .. }))
    );
}

/// Every file's bytes and modification time under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let p = e.path().to_path_buf();
            let meta = std::fs::metadata(&p).unwrap();
            (
                p.clone(),
                (std::fs::read(&p).unwrap(), meta.modified().unwrap()),
            )
        })
        .collect()
}

#[test]
fn the_photo_folder_is_unchanged_by_ranking_exporting_and_copying() {
    use lychee_rerank::library::export;
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for entry in std::fs::read_dir(common::photo_dir()).unwrap() {
        let e = entry.unwrap();
        std::fs::copy(e.path(), photos.join(e.file_name())).unwrap();
    }
    let before = snapshot(&photos);
    let out = rank(&photos);
    assert!(out.status.success());
    let rows: Vec<export::ExportRow> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("score").is_some())
        .map(|v| export::ExportRow {
            rank: v["rank"].as_u64().unwrap() as usize,
            path: PathBuf::from(v["path"].as_str().unwrap()),
            score: v["score"].as_f64().unwrap(),
            logit_yes: v["logit_yes"].as_f64().unwrap() as f32,
            logit_no: v["logit_no"].as_f64().unwrap() as f32,
            visual_tokens: v["visual_tokens"].as_u64().unwrap() as usize,
            width: 0,
            height: 0,
        })
        .collect();
    export::write_text(&tmp.path().join("ranking.csv"), &export::to_csv(&rows)).unwrap();
    export::write_text(
        &tmp.path().join("ranking.json"),
        &export::to_json("q", "i", &rows),
    )
    .unwrap();
    let chosen: Vec<PathBuf> = rows.iter().take(5).map(|r| r.path.clone()).collect();
    let report = export::copy_to_folder(&chosen, &tmp.path().join("best"));
    assert_eq!(report.copied.len(), 5);
    assert!(report.failed.is_empty());
    assert_eq!(snapshot(&photos), before, "the photos are untouched");
}

/// Runs `cmd` with IPv4 and IPv6 sockets forbidden: a seccomp filter (which needs no
/// privileges, unlike a network namespace) ends the process the moment it asks for one.
/// So a command that succeeds under it has not even tried to reach the network.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn without_network(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    use std::os::unix::process::CommandExt;
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "x86_64")]
    const SOCKET: u32 = 41; // __NR_socket
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    #[cfg(target_arch = "aarch64")]
    const SOCKET: u32 = 198;
    const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const KILL: u32 = 0x8000_0000; // SECCOMP_RET_KILL_PROCESS
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // struct seccomp_data: nr at 0, arch at 4, args[0] at 16
    let program = [
        op(LD_ABS, 0, 0, 4),
        op(JEQ, 0, 5, ARCH),
        op(LD_ABS, 0, 0, 0),
        op(JEQ, 0, 3, SOCKET),
        op(LD_ABS, 0, 0, 16),
        op(JEQ, 2, 0, libc::AF_INET as u32),
        op(JEQ, 1, 0, libc::AF_INET6 as u32),
        op(RET, 0, 0, ALLOW),
        op(RET, 0, 0, KILL),
    ];
    // SAFETY: between fork and exec only async-signal-safe calls are made (two prctl);
    // the filter program outlives them.
    unsafe {
        cmd.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output()
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn ranking_needs_no_network() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    // The filter works: a download from a server on this machine is stopped at its first
    // socket, and the server sees no one.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", server.local_addr().unwrap());
    let out = without_network(
        Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
            .env("HF_ENDPOINT", &endpoint)
            .env("HF_HUB_CACHE", tmp.path().join("hub"))
            .env_remove("HF_HUB_OFFLINE")
            .args(["download", "someone/some-model"]),
    )
    .expect("a seccomp filter can be installed without privileges");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "the download was not stopped: {out:?}"
    );
    assert!(server.accept().is_err(), "no connection reached the server");

    // A ranking from a local model folder never asks for a network socket.
    let out = without_network(
        Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
            .env("LYCHEE_CACHE_DIR", tmp.path())
            .args(["rank", "--json", "--query", "a photo", "--model"])
            .arg(common::model_dir())
            .arg(common::photo_dir()),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let scored = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"score\""))
        .count();
    assert_eq!(scored, common::reference().photos.len());
}
