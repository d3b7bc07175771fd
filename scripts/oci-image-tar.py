"""Writes a directory as an OCI image layout tar: one uncompressed layer (files keep their
owners and modes, times zeroed), a config with the given entrypoint, a manifest and an index
naming the image. Usage: oci-image-tar.py ROOT OUT NAME ENTRYPOINT_JSON"""

import hashlib, io, json, os, sys, tarfile

root, out, name, entrypoint = sys.argv[1:5]

def reset(info):
    info.mtime = 0
    info.uname = info.gname = ""
    return info

layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for entry in sorted(os.listdir(root)):
        tar.add(os.path.join(root, entry), arcname=entry, filter=reset)
layer = layer.getvalue()

def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data

layer_digest, _ = blob(layer)
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {
        "Entrypoint": json.loads(entrypoint),
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "ExposedPorts": {"8080/tcp": {}},
        "WorkingDir": "/home/gem",
    },
    "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
}, sort_keys=True).encode()
config_digest, _ = blob(config)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": config_digest, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest, "size": len(layer)}],
}, sort_keys=True).encode()
manifest_digest, _ = blob(manifest)
index = json.dumps({
    "schemaVersion": 2,
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": manifest_digest, "size": len(manifest),
                   "annotations": {"io.containerd.image.name": name,
                                   "org.opencontainers.image.ref.name": name}}],
}).encode()

with tarfile.open(out, mode="w") as tar:
    def put(path, data):
        info = tarfile.TarInfo(path)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    put("index.json", index)
    for digest, data in ((layer_digest, layer), (config_digest, config),
                         (manifest_digest, manifest)):
        put("blobs/sha256/" + digest.split(":")[1], data)
print(f"{len(layer) / 2**20:.1f} MiB layer", file=sys.stderr)
