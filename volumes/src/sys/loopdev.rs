//! Loop devices through their ioctls (linux/loop.h), without the loopdev crates: those
//! generate their bindings with bindgen at build time, which needs libclang on every
//! machine that builds berth, for four ioctls and two structs.

use crate::error::{VolumeError, VolumeResult};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOOP_CONTROL: &str = "/dev/loop-control";
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
const LO_FLAGS_READ_ONLY: u32 = 1;
/// The kernel detaches the device by itself once its last user (our mount) is gone, and
/// also when we die between attaching and mounting: no device is left behind either way.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Another process may take the free device between GET_FREE and CONFIGURE.
const ATTACH_ATTEMPTS: usize = 16;

#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

mod ioctls {
    use super::{LoopConfig, LoopInfo64};
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
    nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
}

/// An attached loop device, open. With autoclear, it stays attached only while it is open
/// or mounted: mount it before dropping this.
pub struct LoopDevice {
    pub path: PathBuf,
    _device: File,
}

/// Attaches `image` to a free loop device (LOOP_CONFIGURE: Linux 5.8 or later).
pub fn attach(image: &Path, read_only: bool) -> VolumeResult<LoopDevice> {
    let backing =
        OpenOptions::new().read(true).write(!read_only).open(image).map_err(VolumeError::io("opening image", image.display()))?;
    let control = File::open(LOOP_CONTROL).map_err(VolumeError::io("opening", LOOP_CONTROL))?;
    let mut info = LoopInfo64::zeroed();
    info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
    let name = image.as_os_str().as_encoded_bytes();
    let shown = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..shown].copy_from_slice(&name[..shown]);
    let config = LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info, reserved: [0; 8] };

    let mut last_error = nix::errno::Errno::EBUSY;
    for _ in 0..ATTACH_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { ioctls::loop_ctl_get_free(control.as_raw_fd()) }
            .map_err(VolumeError::io("finding a free loop device through", LOOP_CONTROL))?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device =
            OpenOptions::new().read(true).write(!read_only).open(&path).map_err(VolumeError::io("opening", path.display()))?;
        // SAFETY: `config` is a live, properly laid out `struct loop_config`.
        match unsafe { ioctls::loop_configure(device.as_raw_fd(), &config) } {
            Ok(_) => return Ok(LoopDevice { path, _device: device }),
            Err(nix::errno::Errno::EBUSY) => last_error = nix::errno::Errno::EBUSY,
            Err(err) => {
                return Err(VolumeError::io("attaching image to", format!("{} ({})", path.display(), image.display()))(err))
            }
        }
    }
    Err(VolumeError::io("attaching image", image.display())(last_error))
}

/// Every attached loop device whose backing file is `image` (same device and inode, so
/// a renamed or deleted image is still recognised).
pub fn devices_backing(image: &Path) -> VolumeResult<Vec<PathBuf>> {
    let wanted = std::fs::metadata(image).map_err(VolumeError::io("reading", image.display()))?;
    let mut found = Vec::new();
    for device in attached_devices()? {
        let Ok(file) = File::open(&device) else { continue };
        let mut info = LoopInfo64::zeroed();
        // SAFETY: LOOP_GET_STATUS64 fills a `struct loop_info64` we own.
        if unsafe { ioctls::loop_get_status64(file.as_raw_fd(), &mut info) }.is_ok()
            && info.lo_device == wanted.dev()
            && info.lo_inode == wanted.ino()
        {
            found.push(device);
        }
    }
    Ok(found)
}

/// Loop devices that have a backing file, per sysfs (`/sys/block/loopN/loop` exists only then).
fn attached_devices() -> VolumeResult<Vec<PathBuf>> {
    let entries = std::fs::read_dir("/sys/block").map_err(VolumeError::io("listing", "/sys/block"))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let is_loop = name.strip_prefix("loop").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            (is_loop && entry.path().join("loop").exists()).then(|| PathBuf::from("/dev").join(name))
        })
        .collect())
}

/// Detaches every loop device backing `image` and waits, up to `patience`, for the kernel
/// to let go. A device still open elsewhere (a mount in another namespace) only gets
/// autoclear from LOOP_CLR_FD; it is reported rather than waited for forever.
pub fn detach_all(image: &Path, patience: Duration) -> VolumeResult<()> {
    let deadline = Instant::now() + patience;
    let mut asked = false;
    loop {
        let devices = devices_backing(image)?;
        if devices.is_empty() {
            return Ok(());
        }
        if !asked {
            for device in &devices {
                let Ok(file) = File::open(device) else { continue };
                // SAFETY: LOOP_CLR_FD takes no argument.
                match unsafe { ioctls::loop_clr_fd(file.as_raw_fd()) } {
                    Ok(_) | Err(nix::errno::Errno::ENXIO) => {}
                    Err(err) => return Err(VolumeError::io("detaching", device.display())(err)),
                }
            }
            asked = true;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
            return Err(VolumeError::Busy {
                object: image.display().to_string(),
                detail: format!("loop device(s) {} still in use (mounted elsewhere?)", names.join(", ")),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
