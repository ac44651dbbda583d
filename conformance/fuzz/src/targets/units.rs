//! Sizes, rates and times as people type them (tc's units in berth-util, berth-quota's
//! sizes), and what berth-quota reads from the kernel and /etc (mountinfo, projid).

use crate::engine::Target;
use berth_quota::mounts::parse_mountinfo;
use berth_quota::registry::parse_projid;
use berth_quota::Bytes;
use berth_util::units::{rate_bits, size_bytes, time_micros};

/// The largest f64 below 2^64: a value at or past it does not fit the u64 it is read into.
const U64_LIMIT: f64 = 18_446_744_073_709_549_568.0;

fn run_units(input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    let mut accepted = false;
    for value in [rate_bits(&text), size_bytes(&text), time_micros(&text)].into_iter().flatten() {
        // An accepted value is the value written, never a saturated stand-in.
        assert!((value as f64) <= U64_LIMIT, "{text:?} accepted as {value}, past what a u64 holds");
        accepted = true;
    }
    if let Ok(bytes) = Bytes::parse(&text) {
        assert_eq!(Bytes::parse(&bytes.to_string()), Ok(bytes), "a size prints as it parses");
        accepted = true;
    }
    accepted
}

fn unit_seeds() -> Vec<Vec<u8>> {
    ["10mbit", "512kbit", "1mbps", "32kb", "1500", "50ms", "1.5s", "400us", "64M", "1GiB", "512KB", "0", "10.5gibit", "1tbps"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

fn run_system_files(input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    let mounts = parse_mountinfo(&text);
    let projects = parse_projid(&text);
    !mounts.is_empty() || !projects.is_empty()
}

fn system_file_seeds() -> Vec<Vec<u8>> {
    let mountinfo = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n\
        36 22 7:0 / /srv/q rw,relatime shared:20 - xfs /dev/loop0 rw,attr2,inode64,prjquota\n\
        40 22 0:35 /a\\040b /mnt/with\\040space rw - tmpfs tmpfs rw,size=1024k\n";
    let projid = "berth-1001:1001\n# comment\nweb:42\n";
    vec![mountinfo.as_bytes().to_vec(), projid.as_bytes().to_vec()]
}

pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "units",
            seeds: unit_seeds,
            dictionary: &[b"e308", b"9999999999999999999999", b".", b"bit", b"bps", b"ib"],
            run: run_units,
        },
        Target {
            name: "quota_system_files",
            seeds: system_file_seeds,
            dictionary: &[b" - ", b"\\040", b":", b"\n", b"prjquota"],
            run: run_system_files,
        },
    ]
}
