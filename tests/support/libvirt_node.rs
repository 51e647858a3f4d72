// A node XML for libvirt's test driver, shared (through `include!`) by the unit tests of
// src/provider/libvirt.rs and tests/libvirt_source.rs. It expects `sh(tool, args)` (runs a
// tool, panics on failure) in scope.

/// Images in `dir` and a node XML for the test driver: web01 (two qcow2 disks, one an
/// overlay on `base.qcow2` whose first 2 MiB `fill_base` writes, a cdrom, tagged cloud
/// service "sales"), win01 (Windows by its libosinfo metadata, no tag) and `third_domain`
/// (a `<domain>` element; `{db}` in it stands for the path of db.qcow2).
fn libvirt_test_node(
    dir: &std::path::Path,
    fill_base: impl FnOnce(&std::path::Path),
    third_domain: &str,
) -> std::path::PathBuf {
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 test path").to_string();
    let base = dir.join("base.qcow2");
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &path(&base), "16M"],
    );
    fill_base(&base);
    let web = dir.join("web.qcow2");
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &path(&base),
            "-F",
            "qcow2",
            &path(&web),
        ],
    );
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x22 1M 64k", &path(&web)],
    );
    let data = dir.join("data.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", &path(&data), "8M"]);
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x23 4M 128k", &path(&data)],
    );
    let db = dir.join("db.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", &path(&db), "4M"]);
    let third = third_domain.replace("{db}", &path(&db));
    let node = format!(
        r#"<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>web01</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory unit='MiB'>2048</memory><vcpu>2</vcpu>
    <metadata><vmvault:vm xmlns:vmvault="urn:vmvault:libvirt:1"><vmvault:cloud-service>sales</vmvault:cloud-service></vmvault:vm></metadata>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{web}'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{data}'/><target dev='vdb' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><source file='/nonexistent.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>win01</name><uuid>22222222-2222-3333-4444-555555555555</uuid>
    <memory unit='GiB'>4</memory><vcpu>4</vcpu>
    <metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://microsoft.com/win/10"/></libosinfo:libosinfo></metadata>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{db}'/><target dev='sda' bus='sata'/></disk>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>
  {third}
</node>"#,
        web = path(&web),
        data = path(&data),
        db = path(&db),
    );
    let file = dir.join("node.xml");
    std::fs::write(&file, node).expect("write the node XML");
    file
}
