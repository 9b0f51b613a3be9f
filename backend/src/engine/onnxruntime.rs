//! Finding and opening an ONNX Runtime shared library at run time.
//!
//! With ort's `alternative-backend` feature ort never opens a library by itself, so this module does what its
//! `load-dynamic` loader would: open the library (libloading), call `OrtGetApiBase()`, ask for the API table of
//! the version ort was built against (`ort::sys::ORT_API_VERSION`, 24 here, so ONNX Runtime 1.24 or newer) and
//! copy the table out for `ort::set_api`. The library stays loaded for the life of the process.
//!
//! Where it looks, first found wins: the configured path, `ORT_DYLIB_PATH`, then the `onnxruntime/capi/`
//! folder of the `onnxruntime` (or `onnxruntime-gpu`) wheel in a Python site-packages: `$VIRTUAL_ENV`, a `.venv`
//! in the working directory or any folder above it, the user's `~/.local`, then `/usr/local` and `/usr`.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::error::EngineError;

/// The library handle and its path, kept for the life of the process: the API table points into it.
static LIBRARY: OnceLock<(PathBuf, libloading::Library)> = OnceLock::new();

/// An opened ONNX Runtime: its API table, version and file.
pub(crate) struct Loaded {
    pub api: ort::sys::OrtApi,
    pub version: String,
    pub path: PathBuf,
}

/// Where ONNX Runtime was found, or every place that was searched.
pub(crate) fn locate(configured: Option<&Path>) -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut searched = Vec::new();
    for prefix in python_prefixes() {
        let sites = site_packages(&prefix);
        if sites.is_empty() {
            searched.push(prefix);
        }
        for site in sites {
            let capi = site.join("onnxruntime").join("capi");
            if let Some(lib) = library_in(&capi) {
                return Ok(lib);
            }
            searched.push(capi);
        }
    }
    Err(searched)
}

/// Python installation prefixes to look in, most specific first.
fn python_prefixes() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(v));
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.extend(cwd.ancestors().map(|d| d.join(".venv")).filter(|d| d.is_dir()));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        out.push(Path::new(&home).join(".local"));
    }
    out.push(PathBuf::from("/usr/local"));
    out.push(PathBuf::from("/usr"));
    out.dedup();
    out
}

/// The site-packages folders under a prefix (`lib/python3.*/site-packages`, and Debian's `dist-packages`).
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
            .collect();
        // Sorted, newest Python last, then reversed: newest first, and the order never depends on the
        // file system.
        pythons.sort();
        pythons.reverse();
        for py in pythons {
            for sub in ["site-packages", "dist-packages"] {
                let site = py.join(sub);
                if site.is_dir() {
                    out.push(site);
                }
            }
        }
    }
    out
}

/// The ONNX Runtime library in a wheel's `capi` folder: `libonnxruntime.so.1.31.1` (or the bare
/// `libonnxruntime.so`), never the providers' libraries beside it.
fn library_in(capi: &Path) -> Option<PathBuf> {
    let base = format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == base || n.strip_prefix(&base).is_some_and(|rest| rest.starts_with('.')))
        })
        .collect();
    // The longest name is the fully versioned file that the shorter names link to.
    found.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
    found.pop()
}

/// Opens the library at `path` and reads its API table.
pub(crate) fn open(path: &Path) -> Result<Loaded, EngineError> {
    let unusable = |reason: String| EngineError::OnnxRuntimeUnusable { path: path.to_path_buf(), reason };
    if let Some((opened, lib)) = LIBRARY.get() {
        // Opened by an earlier `Engine::init` whose environment then failed: reuse it, never open a second one.
        if opened != path {
            return Err(unusable(format!("{} is already loaded in this process", opened.display())));
        }
        return read_api(lib, path);
    }
    // SAFETY: opening a shared library runs its initialisers; an ONNX Runtime library's are sound to run once
    // per process, and the handle is kept for the life of the process below.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| unusable(e.to_string()))?;
    let loaded = read_api(&lib, path)?;
    let _ = LIBRARY.set((path.to_path_buf(), lib));
    Ok(loaded)
}

fn read_api(lib: &libloading::Library, path: &Path) -> Result<Loaded, EngineError> {
    let unusable = |reason: String| EngineError::OnnxRuntimeUnusable { path: path.to_path_buf(), reason };
    // SAFETY: `OrtGetApiBase` is ONNX Runtime's C entry point with exactly this signature; it returns a pointer
    // to a static struct of two function pointers, valid while the library is loaded.
    let base = unsafe {
        let get: libloading::Symbol<'_, unsafe extern "system" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").map_err(|_| unusable("does not export OrtGetApiBase".into()))?;
        get()
    };
    if base.is_null() {
        return Err(unusable("OrtGetApiBase returned null".into()));
    }
    // SAFETY: `base` is non-null and points to the library's static OrtApiBase; the version string is a static
    // NUL-terminated string owned by the library.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) }.to_string_lossy().into_owned();
    let wanted = ort::sys::ORT_API_VERSION;
    // SAFETY: as above; GetApi returns null for an API version the library does not implement.
    let api = unsafe { ((*base).GetApi)(wanted) };
    if api.is_null() {
        return Err(unusable(format!(
            "ONNX Runtime {version} does not offer API version {wanted} (ONNX Runtime 1.{wanted} or newer is needed)"
        )));
    }
    // SAFETY: a non-null table from GetApi(wanted) starts with the `OrtApi` of version `wanted`, which is the
    // struct ort-sys declares for this build; copying it out is how ort's own loader reads it. Its function
    // pointers stay valid because the library is never unloaded.
    let api = unsafe { std::ptr::read(api) };
    Ok(Loaded { api, version, path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_versioned_library_and_skips_the_providers() {
        let dir = std::env::temp_dir().join(format!("hyscale-ort-locate-{}", std::process::id()));
        let capi = dir.join("capi");
        std::fs::create_dir_all(&capi).unwrap();
        for name in ["libonnxruntime.so", "libonnxruntime.so.1.31.1", "libonnxruntime_providers_shared.so"] {
            std::fs::write(capi.join(name), b"").unwrap();
        }
        let found = library_in(&capi).unwrap();
        assert_eq!(found.file_name().unwrap(), "libonnxruntime.so.1.31.1");
        assert_eq!(library_in(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_onnx_runtime_is_refused_with_its_path() {
        let path = std::env::temp_dir().join(format!("hyscale-not-ort-{}.so", std::process::id()));
        std::fs::write(&path, b"not a library").unwrap();
        let e = open(&path).err().expect("must fail").to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
